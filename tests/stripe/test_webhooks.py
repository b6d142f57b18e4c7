"""Stripe's webhooks at the hook: signature checked, refund events acted on once.

The events are signed here as Stripe signs them (``t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``), independently of the library the hook verifies them with.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from temporalio.api.enums.v1 import EventType

pytestmark = [pytest.mark.integration]

WEBHOOKS = "/v1/provider/stripe/webhooks"
TOTAL = 30000


def _signed(
    secret: str, event: dict[str, Any], *, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    timestamp = int(time.time() if at is None else at)
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={timestamp},v1={mac}", "Content-Type": "application/json"}


def _event(
    event_type: str = "refund.updated", status: str = "succeeded", payment_intent: str = "pi_none"
) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": f"re_{uuid.uuid4().hex[:12]}",
                "object": "refund",
                "amount": 1000,
                "currency": "krw",
                "payment_intent": payment_intent,
                "status": status,
            }
        },
    }


async def _recorded(database_url: str, event_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM stripe_events WHERE event_id = $1", event_id
        )
        return count
    finally:
        await conn.close()


async def test_a_settled_refund_event_is_acted_on_once(stripe_stack):
    """Stripe redelivers: the second delivery of the same event id is answered, not acted on."""
    event = _event()
    body, headers = _signed(stripe_stack.settings.stripe_webhook_secret, event)

    first = await stripe_stack.http.post(WEBHOOKS, content=body, headers=headers)
    again = await stripe_stack.http.post(WEBHOOKS, content=body, headers=headers)

    assert first.status_code == again.status_code == 200
    # Nobody waits on this PaymentIntent, so both are "ignored"; the event is recorded once.
    assert again.json() == {"ignored": True}
    assert await _recorded(stripe_stack.settings.database_url, event["id"]) == 1


@pytest.mark.parametrize("event_type", ["refund.failed", "charge.refund.updated"])
async def test_every_refund_event_type_is_handled(stripe_stack, event_type):
    event = _event(event_type, status="failed" if event_type == "refund.failed" else "succeeded")
    body, headers = _signed(stripe_stack.settings.stripe_webhook_secret, event)

    answer = await stripe_stack.http.post(WEBHOOKS, content=body, headers=headers)

    assert answer.status_code == 200, answer.text
    assert await _recorded(stripe_stack.settings.database_url, event["id"]) == 1


async def test_a_pending_refund_event_is_ignored_and_not_recorded(stripe_stack):
    """Not final yet: a later event for the same refund must still be acted on."""
    event = _event(status="pending")
    body, headers = _signed(stripe_stack.settings.stripe_webhook_secret, event)

    answer = await stripe_stack.http.post(WEBHOOKS, content=body, headers=headers)

    assert answer.json() == {"ignored": True}
    assert await _recorded(stripe_stack.settings.database_url, event["id"]) == 0


async def test_other_event_types_are_ignored(stripe_stack):
    event = _event("payment_intent.succeeded")
    event["data"]["object"] = {"id": "pi_x", "object": "payment_intent"}
    body, headers = _signed(stripe_stack.settings.stripe_webhook_secret, event)

    answer = await stripe_stack.http.post(WEBHOOKS, content=body, headers=headers)

    assert (answer.status_code, answer.json()) == (200, {"ignored": True})


async def test_a_missing_wrong_or_stale_signature_is_unauthorized(stripe_stack):
    secret = stripe_stack.settings.stripe_webhook_secret
    body, headers = _signed(secret, _event())
    missing = await stripe_stack.http.post(WEBHOOKS, content=body)
    forged_body, forged = _signed("whsec_another", _event())
    wrong = await stripe_stack.http.post(WEBHOOKS, content=forged_body, headers=forged)
    tampered = await stripe_stack.http.post(WEBHOOKS, content=body + b" ", headers=headers)
    stale_body, stale = _signed(secret, _event(), at=time.time() - 301)
    old = await stripe_stack.http.post(WEBHOOKS, content=stale_body, headers=stale)

    for answer in (missing, wrong, tampered, old):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"


async def test_a_signed_body_that_is_not_an_event_is_refused(stripe_stack):
    secret = stripe_stack.settings.stripe_webhook_secret
    timestamp = int(time.time())
    body = b"not json"
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()

    answer = await stripe_stack.http.post(
        WEBHOOKS, content=body, headers={"Stripe-Signature": f"t={timestamp},v1={mac}"}
    )

    assert answer.status_code == 422, answer.text


async def test_a_pending_refund_is_settled_by_stripes_webhook(stripe_stack, localstripe_url):
    """localstripe never answers pending, so Stripe's pending answer is replayed (respx)
    for the refund calls only; the rest is localstripe. The run waits for the refund, the
    signed ``refund.updated`` arrives, the hook signals the run and it ends canceled."""
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    payment = await stripe_stack.stripe.create_payment(TOTAL, "KRW")
    refund_id = f"re_pending{uuid.uuid4().hex[:10]}"
    pending = {
        "id": refund_id,
        "object": "refund",
        "amount": TOTAL,
        "currency": "krw",
        "metadata": {},
        "payment_intent": payment["id"],
        "status": "pending",
    }
    with respx.mock(base_url=localstripe_url, assert_all_called=False) as stripe_api:
        stripe_api.post("/v1/refunds").mock(return_value=httpx.Response(200, json=pending))
        stripe_api.get(f"/v1/refunds/{refund_id}").mock(
            return_value=httpx.Response(200, json=pending)
        )
        stripe_api.route().pass_through()
        await _put_order(stripe_stack, order_id, payment["id"])
        await _request_and_accept(stripe_stack, order_id)
        waiting = await _wait_for(stripe_stack, order_id, lambda v: v["refunds"])
        assert waiting["status"] == "in_progress"
        assert [r["status"] for r in waiting["refunds"]] == ["processing"]

        event = _event(status="succeeded", payment_intent=payment["id"])
        event["data"]["object"]["id"] = refund_id
        body, headers = _signed(stripe_stack.settings.stripe_webhook_secret, event)
        answer = await stripe_stack.http.post(WEBHOOKS, content=body, headers=headers)
        assert answer.json() == {"ignored": False}

        final = await _wait_for(stripe_stack, order_id, lambda v: v["status"] == "canceled")
    assert [r["status"] for r in final["refunds"]] == ["succeeded"]
    history = await stripe_stack.temporal.get_workflow_handle(
        final["cancellation_id"]
    ).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert signals == ["provider_refund_settled"]


async def _put_order(stack: Any, order_id: str, payment_id: str) -> None:
    answer = await stack.http.put(
        f"/v1/shops/{stack.shop_id}/orders/{order_id}",
        json={
            "customer_id": "cust-1",
            "currency": "KRW",
            "status": "paid",
            "shipping_fee": 3000,
            "items": [{"item_id": "i1", "sku": "sku-mug", "quantity": 1, "unit_price": 27000}],
            "tenders": [
                {"tender_id": "t1", "kind": "card", "amount": TOTAL, "payment_id": payment_id}
            ],
        },
    )
    assert answer.status_code == 201, answer.text


async def _request_and_accept(stack: Any, order_id: str) -> None:
    path = f"/v1/shops/{stack.shop_id}/orders/{order_id}/cancellation"
    requested = await stack.http.post(
        path,
        json={"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"},
    )
    assert requested.status_code == 201, requested.text
    accepted = await stack.http.post(
        f"{path}/accept",
        json={"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"},
    )
    assert accepted.status_code == 200, accepted.text


async def _wait_for(stack: Any, order_id: str, predicate: Any) -> dict[str, Any]:
    path = f"/v1/shops/{stack.shop_id}/orders/{order_id}/cancellation"
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        view: dict[str, Any] = (await stack.http.get(path)).json()
        if predicate(view):
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within 20 s: {view}")
        await asyncio.sleep(0.1)
