"""The Stripe adapter on Stripe's answers that localstripe never gives.

respx replays Stripe's answers at the HTTP layer under the real adapter and the real
``stripe`` library. The bodies follow the shapes of Stripe's API reference (refund,
PaymentIntent and error objects, the ``Request-Id`` header); only the paths localstripe
can't produce are here: pending, failed and ``requires_action`` refunds, ``409``, ``429``,
``charge_already_refunded``, answers that are not JSON, and answers for another amount or
currency than asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

from activities.provider_client import (
    ProviderRefused,
    ProviderUnavailable,
    RefundDeclined,
)
from activities.stripe_provider import StripeProviderClient

API = "https://api.stripe.test"
API_KEY = "sk_test_51RecordedKeyNeverPrinted"
PI = "pi_3RecordedIntent"
RE = "re_3RecordedRefund"
REQUEST_ID = "req_RecordedRequest1"


def payment_intent(**changes: Any) -> dict[str, Any]:
    """A captured EUR 50.00 PaymentIntent with its charge expanded (``expand[]=latest_charge``)."""
    intent: dict[str, Any] = {
        "id": PI,
        "object": "payment_intent",
        "amount": 5000,
        "amount_capturable": 0,
        "amount_received": 5000,
        "currency": "eur",
        "customer": None,
        "status": "succeeded",
        "latest_charge": {
            "id": "ch_3RecordedCharge",
            "object": "charge",
            "amount": 5000,
            "amount_captured": 5000,
            "amount_refunded": 0,
            "captured": True,
            "currency": "eur",
            "payment_intent": PI,
            "refunded": False,
            "status": "succeeded",
        },
    }
    intent.update(changes)
    return intent


def refund(**changes: Any) -> dict[str, Any]:
    """A Stripe refund of EUR 12.00 from :data:`PI`."""
    body: dict[str, Any] = {
        "id": RE,
        "object": "refund",
        "amount": 1200,
        "charge": "ch_3RecordedCharge",
        "currency": "eur",
        "metadata": {"refund_id": "cancellation~shop~o1~1-r1", "idempotency_key": "key-1"},
        "payment_intent": PI,
        "reason": None,
        "status": "succeeded",
    }
    body.update(changes)
    return body


def stripe_error(status: int, type_: str, message: str, code: str | None = None) -> httpx.Response:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code:
        error["code"] = code
    return httpx.Response(status, json={"error": error}, headers={"Request-Id": REQUEST_ID})


def answer(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Request-Id": REQUEST_ID})


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[StripeProviderClient]:
    client = StripeProviderClient(API_KEY, api_base=API)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def stripe_api() -> Iterator[respx.MockRouter]:
    """Stripe at :data:`API`: a captured PaymentIntent without refunds, until a test says more."""
    with respx.mock(base_url=API, assert_all_called=False) as router:
        router.get(f"/v1/payment_intents/{PI}").mock(return_value=answer(payment_intent()))
        router.get("/v1/refunds", params={"payment_intent": PI}).mock(
            return_value=answer({"object": "list", "data": [], "has_more": False})
        )
        yield router


async def test_pending_refund_then_succeeded(client, stripe_api):
    """A refund Stripe answers pending reads pending, then succeeded once it settled."""
    stripe_api.post("/v1/refunds").mock(return_value=answer(refund(status="pending")))
    stripe_api.get(f"/v1/refunds/{RE}").mock(
        side_effect=[answer(refund(status="pending")), answer(refund(status="succeeded"))]
    )

    created = await client.refund(PI, 1200, "key-1", metadata={"refund_id": "r1"})

    assert created["status"] == "pending"
    assert (await client.get_refund(RE))["status"] == "pending"
    assert (await client.get_refund(RE))["status"] == "succeeded"


async def test_refund_request_carries_key_account_amount_and_refund_id(client, stripe_api):
    route = stripe_api.post("/v1/refunds").mock(return_value=answer(refund()))

    await client.refund(PI, 1200, "key-1", account="acct_1Shop", metadata={"refund_id": "r1"})

    request = route.calls.last.request
    assert request.headers["Idempotency-Key"] == "key-1"
    assert request.headers["Stripe-Account"] == "acct_1Shop"
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form["payment_intent"] == PI
    assert form["amount"] == "1200"
    assert form["metadata[refund_id]"] == "r1"
    assert form["metadata[idempotency_key]"] == "key-1"
    # Every read names the account too: another account's PaymentIntent is not found.
    assert all(c.request.headers.get("Stripe-Account") == "acct_1Shop" for c in stripe_api.calls)


async def test_failed_refund_reads_failed_with_its_reason(client, stripe_api):
    stripe_api.get(f"/v1/refunds/{RE}").mock(
        return_value=answer(refund(status="failed", failure_reason="expired_or_canceled_card"))
    )

    failed = await client.get_refund(RE)

    assert (failed["status"], failed["failure_code"]) == ("failed", "expired_or_canceled_card")


async def test_refund_requiring_action_is_pending(client, stripe_api):
    """requires_action: the customer must act before money moves; for us it is pending."""
    stripe_api.post("/v1/refunds").mock(return_value=answer(refund(status="requires_action")))

    created = await client.refund(PI, 1200, "key-1")

    assert (created["status"], created["provider_status"]) == ("pending", "requires_action")


async def test_canceled_refund_reads_canceled(client, stripe_api):
    stripe_api.get(f"/v1/refunds/{RE}").mock(return_value=answer(refund(status="canceled")))

    assert (await client.get_refund(RE))["status"] == "canceled"


async def test_idempotency_key_in_use_is_retryable(client, stripe_api):
    """409 while another request holds the key: the same request succeeds later."""
    stripe_api.post("/v1/refunds").mock(
        return_value=stripe_error(
            409,
            "invalid_request_error",
            "There is currently another in-progress request using this Idempotent Key"
            " (that probably means you submitted twice, and the other request is still"
            " going through): key-1. Please try again later.",
            code="idempotency_key_in_use",
        )
    )

    with pytest.raises(ProviderUnavailable) as unavailable:
        await client.refund(PI, 1200, "key-1")

    assert unavailable.value.code == "idempotency_key_in_use"
    assert REQUEST_ID in str(unavailable.value)


async def test_rate_limit_is_retryable(client, stripe_api):
    stripe_api.post("/v1/refunds").mock(
        return_value=stripe_error(
            429, "invalid_request_error", "Too many requests in a period of time.", "rate_limit"
        )
    )

    with pytest.raises(ProviderUnavailable) as unavailable:
        await client.refund(PI, 1200, "key-1")

    assert unavailable.value.status == 429


async def test_stripe_5xx_is_retryable(client, stripe_api):
    stripe_api.post("/v1/refunds").mock(
        return_value=stripe_error(500, "api_error", "Something went wrong on Stripe's end.")
    )

    with pytest.raises(ProviderUnavailable):
        await client.refund(PI, 1200, "key-1")


async def test_connection_error_is_retryable(client, stripe_api):
    stripe_api.post("/v1/refunds").mock(side_effect=httpx.ConnectError("connection refused"))

    with pytest.raises(ProviderUnavailable) as unavailable:
        await client.refund(PI, 1200, "key-1")

    assert unavailable.value.code == "provider_unavailable"


@pytest.mark.parametrize(
    ("status", "type_", "message", "code", "raised"),
    [
        pytest.param(
            400,
            "invalid_request_error",
            "Charge ch_3RecordedCharge has already been refunded.",
            "charge_already_refunded",
            ProviderRefused,
            id="charge-already-refunded",
        ),
        pytest.param(
            402,
            "card_error",
            "Your card was declined.",
            "card_declined",
            RefundDeclined,
            id="declined-card-is-a-declined-refund",
        ),
        pytest.param(
            400,
            "invalid_request_error",
            "Refund amount (€60.00) is greater than charge amount (€50.00)",
            "amount_too_large",
            ProviderRefused,
            id="invalid-request",
        ),
    ],
)
async def test_a_refusal_is_final_with_stripes_code_and_message(
    client, stripe_api, status, type_, message, code, raised
):
    stripe_api.post("/v1/refunds").mock(return_value=stripe_error(status, type_, message, code))

    with pytest.raises(raised) as refused:
        await client.refund(PI, 1200, "key-1")

    assert refused.value.code == code
    assert not isinstance(refused.value, ProviderUnavailable)
    said = str(refused.value)
    assert message in said
    assert REQUEST_ID in said


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(502, b"<html><body>502 Bad Gateway</body></html>", id="proxy-error-page"),
        pytest.param(200, b'{"id": "re_3Recorded', id="cut-off-json"),
    ],
)
async def test_answer_that_is_not_json_is_retryable(client, stripe_api, status, body):
    """Nobody knows what happened: the same request, with the same key, is safe to resend."""
    stripe_api.post("/v1/refunds").mock(
        return_value=httpx.Response(status, content=body, headers={"Request-Id": REQUEST_ID})
    )

    with pytest.raises(ProviderUnavailable) as unavailable:
        await client.refund(PI, 1200, "key-1")

    assert unavailable.value.code == "unreadable_answer"
    assert "<html>" not in str(unavailable.value)


async def test_refund_answered_for_another_amount_is_refused(client, stripe_api):
    """Never a silent success: the money moved, but not as asked; a person must look."""
    stripe_api.post("/v1/refunds").mock(return_value=answer(refund(amount=12000)))

    with pytest.raises(ProviderRefused) as refused:
        await client.refund(PI, 1200, "key-1")

    assert refused.value.code == "refund_mismatch"
    assert "amount 12000 instead of 1200" in str(refused.value)


async def test_refund_answered_in_another_currency_is_refused(client, stripe_api):
    stripe_api.post("/v1/refunds").mock(return_value=answer(refund(currency="usd")))

    with pytest.raises(ProviderRefused) as refused:
        await client.refund(PI, 1200, "key-1")

    assert refused.value.code == "refund_mismatch"
    assert "currency USD instead of EUR" in str(refused.value)


async def test_payment_intent_in_another_currency_is_reported_as_it_is(client, stripe_api):
    """The hook's payment check compares the currency and refuses the tender."""
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(
        return_value=answer(payment_intent(currency="usd"))
    )

    assert (await client.get_payment(PI))["currency"] == "USD"


async def test_refund_in_an_unknown_status_is_refused(client, stripe_api):
    stripe_api.get(f"/v1/refunds/{RE}").mock(return_value=answer(refund(status="reversed")))

    with pytest.raises(ProviderRefused) as refused:
        await client.get_refund(RE)

    assert refused.value.code == "unexpected_answer"
    assert "'reversed'" in str(refused.value)


async def test_payment_intent_that_took_no_money_is_refused(client, stripe_api):
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(
        return_value=answer(payment_intent(status="processing"))
    )

    with pytest.raises(ProviderRefused) as refused:
        await client.get_payment(PI)

    assert refused.value.code == "payment_not_settled"


async def test_partially_refunded_payment_intent(client, stripe_api):
    intent = payment_intent()
    intent["latest_charge"]["amount_refunded"] = 2000
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(return_value=answer(intent))

    payment = await client.get_payment(PI)

    assert payment["status"] == "partially_refunded"
    assert (payment["captured_amount"], payment["refunded_amount"]) == (5000, 2000)
    assert payment["refundable_amount"] == 3000


async def test_refund_found_by_its_key_is_returned_not_made_again(client, stripe_api):
    """Stripe forgot the key (24 h): the refund made with it is found by its metadata."""
    stripe_api.get("/v1/refunds", params={"payment_intent": PI}).mock(
        return_value=answer({"object": "list", "data": [refund()], "has_more": False})
    )
    create = stripe_api.post("/v1/refunds").mock(return_value=answer(refund(id="re_second")))

    found = await client.refund(PI, 1200, "key-1")

    assert found["id"] == RE
    assert not create.called


async def test_api_key_never_appears_in_an_error(client, stripe_api):
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(
        return_value=stripe_error(
            401, "invalid_request_error", f"Invalid API Key provided: {API_KEY}"
        )
    )

    with pytest.raises(ProviderRefused) as refused:
        await client.get_payment(PI)

    assert API_KEY not in str(refused.value)
    assert "sk_test_***" in str(refused.value)


async def test_recapture_check_with_a_saved_card_requires_reauthorization(client, stripe_api):
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(
        return_value=answer(payment_intent(status="canceled", customer="cus_Recorded"))
    )
    stripe_api.get("/v1/customers/cus_Recorded/payment_methods").mock(
        return_value=answer(
            {"object": "list", "data": [{"id": "pm_1Saved", "type": "card"}], "has_more": False}
        )
    )

    check = await client.recapture_check(PI)

    assert check == {"outcome": "reauth_required", "until": None}


async def test_refund_list_pages_through_every_refund(client, stripe_api):
    first = [refund(id=f"re_{n}", metadata={"refund_id": f"r{n}"}) for n in range(2)]
    stripe_api.get("/v1/refunds", params={"payment_intent": PI}).mock(
        side_effect=[
            answer({"object": "list", "data": first, "has_more": True}),
            answer({"object": "list", "data": [refund(id="re_2")], "has_more": False}),
        ]
    )

    refunds = await client.list_refunds(PI)

    assert [r["id"] for r in refunds] == ["re_0", "re_1", "re_2"]
    assert json.loads(json.dumps(refunds))  # plain JSON, ready for an activity result


def authorized_intent(**changes: Any) -> dict[str, Any]:
    """An uncaptured EUR 50.00 PaymentIntent, as Stripe shows it."""
    intent = payment_intent(status="requires_capture", amount_capturable=5000, amount_received=0)
    intent["latest_charge"].update(captured=False, amount_captured=0)
    intent.update(changes)
    return intent


async def test_partial_void_captures_authorized_minus_released(client, stripe_api):
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(return_value=answer(authorized_intent()))
    captured = payment_intent(amount_received=3000)
    captured["latest_charge"]["amount_captured"] = 3000
    capture = stripe_api.post(f"/v1/payment_intents/{PI}/capture").mock(
        return_value=answer(captured)
    )

    released = await client.void(PI, "void-key", amount=2000, account="acct_1Shop")

    form = dict(httpx.QueryParams(capture.calls.last.request.content.decode()))
    assert form == {"amount_to_capture": "3000"}
    assert capture.calls.last.request.headers["Idempotency-Key"] == "void-key"
    assert (released["status"], released["captured_amount"], released["released"]) == (
        "captured",
        3000,
        2000,
    )


async def test_partial_void_repeated_after_its_capture_answers_the_same(client, stripe_api):
    """The capture happened but its answer was lost: the retry must not be refused."""
    captured = payment_intent(amount_received=3000)
    captured["latest_charge"]["amount_captured"] = 3000
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(return_value=answer(captured))
    capture = stripe_api.post(f"/v1/payment_intents/{PI}/capture")

    again = await client.void(PI, "void-key", amount=2000)

    assert again["released"] == 2000
    assert not capture.called


async def test_whole_void_repeated_after_the_cancel_answers_the_same(client, stripe_api):
    stripe_api.get(f"/v1/payment_intents/{PI}").mock(
        return_value=answer(authorized_intent(status="canceled", amount_capturable=0))
    )
    cancel = stripe_api.post(f"/v1/payment_intents/{PI}/cancel")

    again = await client.void(PI, "void-key")

    assert (again["status"], again["released"]) == ("voided", 5000)
    assert not cancel.called
