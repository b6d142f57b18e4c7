"""Stripe's webhooks at the hook: signature checked, refund events acted on once.

The events are signed here as Stripe signs them (``t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``), independently of the library the hook verifies them with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest

pytestmark = [pytest.mark.integration]

WEBHOOKS = "/v1/provider/stripe/webhooks"


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
