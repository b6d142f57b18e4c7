"""The Stripe adapter against localstripe, a fake Stripe server run as its own process.

Each test makes its own PaymentIntents with Stripe's test card, so the tests share the
server but no payment.
"""

from __future__ import annotations

import uuid

import pytest

from activities.provider_client import PaymentProviderClient, ProviderRefused
from activities.provider_port import PaymentProvider
from activities.stripe_provider import StripeProviderClient


def _key() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_refund_of_a_captured_payment_intent_succeeds(stripe_client: StripeProviderClient):
    """A captured PaymentIntent is refunded in part with our refund id in the metadata."""
    payment = await stripe_client.create_payment(5000, "EUR")
    assert payment["status"] == "captured"
    assert payment["currency"] == "EUR"

    refund = await stripe_client.refund(
        payment["id"], 1200, _key(), metadata={"refund_id": "cancellation~s~o~1-r1"}
    )

    assert refund["status"] == "succeeded"
    assert refund["amount"] == 1200
    assert refund["currency"] == "EUR"
    assert refund["payment_id"] == payment["id"]
    assert refund["metadata"]["refund_id"] == "cancellation~s~o~1-r1"
    after = await stripe_client.get_payment(payment["id"])
    assert (after["status"], after["refunded_amount"]) == ("partially_refunded", 1200)
    assert (await stripe_client.get_refund(refund["id"]))["status"] == "succeeded"


async def test_refund_repeated_with_its_key_returns_the_first(stripe_client):
    """localstripe ignores idempotency keys; the adapter still never refunds twice."""
    payment = await stripe_client.create_payment(3000, "EUR")
    key = _key()

    first = await stripe_client.refund(payment["id"], 1000, key)
    again = await stripe_client.refund(payment["id"], 1000, key)

    assert again["id"] == first["id"]
    assert len(await stripe_client.list_refunds(payment["id"])) == 1


async def test_refund_beyond_what_is_refundable_is_refused(stripe_client):
    """localstripe would refund more than was charged; the adapter refuses first."""
    payment = await stripe_client.create_payment(2000, "EUR")
    await stripe_client.refund(payment["id"], 1500, _key())

    with pytest.raises(ProviderRefused) as refused:
        await stripe_client.refund(payment["id"], 600, _key())

    assert refused.value.code == "amount_exceeds_refundable"
    assert (await stripe_client.get_payment(payment["id"]))["refunded_amount"] == 1500


async def test_refund_of_an_authorized_payment_intent_asks_for_a_void(stripe_client):
    """Only authorized: refused as payment_not_captured, which the activity turns into a void."""
    payment = await stripe_client.create_payment(2000, "EUR", capture=False)
    assert payment["status"] == "authorized"

    with pytest.raises(ProviderRefused) as refused:
        await stripe_client.refund(payment["id"], 2000, _key())

    assert refused.value.code == "payment_not_captured"


async def test_whole_void_cancels_the_uncaptured_payment_intent(stripe_client):
    payment = await stripe_client.create_payment(4000, "EUR", capture=False)
    key = _key()

    voided = await stripe_client.void(payment["id"], key)

    assert (voided["status"], voided["released"], voided["captured_amount"]) == ("voided", 4000, 0)
    # A retry after a lost answer finds it canceled and answers the same.
    assert (await stripe_client.void(payment["id"], key))["released"] == 4000


async def test_partial_void_captures_only_what_stays_sold(stripe_client):
    """Releasing 1500 of 4000 authorized captures 2500: the customer pays for what they keep."""
    payment = await stripe_client.create_payment(4000, "EUR", capture=False)
    key = _key()

    released = await stripe_client.void(payment["id"], key, amount=1500)

    assert released["released"] == 1500
    assert released["provider_status"] == "succeeded"
    after = await stripe_client.get_payment(payment["id"])
    # localstripe records the uncaptured 1500 as a refund of the charge (see
    # docs/providers.md); what can still be refunded is what was kept.
    assert after["refundable_amount"] == 2500
    with pytest.raises(ProviderRefused) as refused:
        await stripe_client.void(payment["id"], _key())
    assert refused.value.code == "payment_already_captured"


async def test_void_of_more_than_authorized_is_refused(stripe_client):
    payment = await stripe_client.create_payment(1000, "EUR", capture=False)

    with pytest.raises(ProviderRefused) as refused:
        await stripe_client.void(payment["id"], _key(), amount=1001)

    assert refused.value.code == "amount_exceeds_refundable"
    assert (await stripe_client.get_payment(payment["id"]))["status"] == "authorized"


async def test_list_refunds_finds_ours_by_refund_id(stripe_client):
    """After a key expired, the product finds the refund it made by its refund id."""
    payment = await stripe_client.create_payment(6000, "EUR")
    await stripe_client.refund(payment["id"], 1000, _key(), metadata={"refund_id": "r-1"})
    await stripe_client.refund(payment["id"], 2000, _key(), metadata={"refund_id": "r-2"})

    refunds = await stripe_client.list_refunds(payment["id"])

    by_refund_id = {r["metadata"].get("refund_id"): r for r in refunds}
    assert set(by_refund_id) == {"r-1", "r-2"}
    assert by_refund_id["r-2"]["amount"] == 2000
    assert all(r["payment_id"] == payment["id"] for r in refunds)


async def test_recapture_check_of_a_refunded_payment_is_not_possible(stripe_client):
    payment = await stripe_client.create_payment(2000, "EUR")
    await stripe_client.refund(payment["id"], 2000, _key())

    check = await stripe_client.recapture_check(payment["id"])

    assert check == {"outcome": "not_possible", "until": None}


async def test_recapture_check_of_a_canceled_payment_is_not_possible(stripe_client):
    payment = await stripe_client.create_payment(2000, "EUR", capture=False)
    await stripe_client.void(payment["id"], _key())

    assert (await stripe_client.recapture_check(payment["id"]))["outcome"] == "not_possible"


async def test_recapture_is_refused_without_calling_stripe(stripe_client):
    payment = await stripe_client.create_payment(2000, "EUR")

    with pytest.raises(ProviderRefused) as refused:
        await stripe_client.recapture(payment["id"], 2000, _key())

    assert refused.value.code == "recapture_unavailable"


async def test_calls_naming_an_account_go_through(stripe_client):
    """The shop's account travels as Stripe-Account (localstripe accepts and ignores it)."""
    account = "acct_test_shop"
    payment = await stripe_client.create_payment(2500, "EUR", account=account)

    refund = await stripe_client.refund(payment["id"], 500, _key(), account=account)

    assert refund["status"] == "succeeded"
    assert (await stripe_client.get_payment(payment["id"], account=account))[
        "refunded_amount"
    ] == 500
    assert len(await stripe_client.list_refunds(payment["id"], account=account)) == 1


async def test_unknown_payment_is_not_found(stripe_client):
    """The hook's payment check reads a 404 as "no such payment in this account"."""
    with pytest.raises(ProviderRefused) as refused:
        await stripe_client.get_payment("pi_doesnotexist")

    assert refused.value.status == 404


def test_every_call_of_the_sandbox_client_is_overridden():
    """No sandbox call is inherited: each would send the sandbox's paths to Stripe."""
    public = {
        name
        for name, value in vars(PaymentProviderClient).items()
        if callable(value) and not name.startswith("_")
    }
    assert public
    for name in public:
        assert name in vars(StripeProviderClient), f"StripeProviderClient lacks {name}"


async def test_the_stripe_adapter_speaks_the_whole_port(localstripe_url):
    """Checked by mypy too: the assignment fails type checking if a call's signature drifts."""
    client: PaymentProvider = StripeProviderClient("sk_test_x", api_base=localstripe_url)
    await client.aclose()
