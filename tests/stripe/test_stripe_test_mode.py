"""MANUAL: the Stripe adapter against Stripe's own test mode, with a real test key.

Collected only when ``STRIPE_API_KEY`` starts with ``sk_test_`` (``tests/stripe/conftest.py``;
a live key never runs these).
CI has no key and no route to Stripe, so this suite is for a person checking the adapter
against the real API (README, "Stripe"):

    STRIPE_API_KEY=sk_test_… scripts/test tests/stripe/test_stripe_test_mode.py

It makes small PaymentIntents with Stripe's test card in that test account and refunds or
cancels each of them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from activities.provider_client import ProviderRefused
from activities.stripe_provider import DEFAULT_API_BASE, StripeProviderClient

API_KEY = os.environ.get("STRIPE_API_KEY", "")

pytestmark = pytest.mark.skipif(
    not API_KEY.startswith("sk_test_"),
    reason="manual suite: set STRIPE_API_KEY=sk_test_… to run it against Stripe's test mode",
)


@pytest_asyncio.fixture(loop_scope="session")
async def stripe_test_mode() -> AsyncIterator[StripeProviderClient]:
    base = os.environ.get("STRIPE_API_BASE") or DEFAULT_API_BASE
    client = StripeProviderClient(API_KEY, api_base=base)
    try:
        yield client
    finally:
        await client.aclose()


def _key() -> str:
    return f"manual-{uuid.uuid4().hex}"


async def test_refund_in_part_then_list_it_by_refund_id(stripe_test_mode):
    payment = await stripe_test_mode.create_payment(2000, "EUR")
    refund = await stripe_test_mode.refund(
        payment["id"], 500, _key(), metadata={"refund_id": "manual-r1"}
    )

    assert refund["status"] in ("succeeded", "pending")
    [listed] = await stripe_test_mode.list_refunds(payment["id"])
    assert listed["metadata"]["refund_id"] == "manual-r1"
    after = await stripe_test_mode.get_payment(payment["id"])
    assert (after["status"], after["refunded_amount"]) == ("partially_refunded", 500)


async def test_same_key_returns_the_same_refund(stripe_test_mode):
    payment = await stripe_test_mode.create_payment(2000, "EUR")
    key = _key()

    first = await stripe_test_mode.refund(payment["id"], 700, key)
    again = await stripe_test_mode.refund(payment["id"], 700, key)

    assert again["id"] == first["id"]


async def test_refund_beyond_refundable_is_refused(stripe_test_mode):
    payment = await stripe_test_mode.create_payment(1000, "EUR")

    with pytest.raises(ProviderRefused):
        await stripe_test_mode.refund(payment["id"], 1001, _key())


async def test_whole_void_cancels_and_partial_void_captures_the_rest(stripe_test_mode):
    whole = await stripe_test_mode.create_payment(3000, "EUR", capture=False)
    part = await stripe_test_mode.create_payment(3000, "EUR", capture=False)

    voided = await stripe_test_mode.void(whole["id"], _key())
    released = await stripe_test_mode.void(part["id"], _key(), amount=1000)

    assert (voided["status"], voided["released"]) == ("voided", 3000)
    assert (released["status"], released["captured_amount"], released["released"]) == (
        "captured",
        2000,
        1000,
    )


async def test_recapture_check_after_a_refund_is_not_possible(stripe_test_mode):
    payment = await stripe_test_mode.create_payment(1000, "EUR")
    await stripe_test_mode.refund(payment["id"], 1000, _key())

    assert (await stripe_test_mode.recapture_check(payment["id"]))["outcome"] == "not_possible"
