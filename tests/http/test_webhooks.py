"""The provider's signed webhooks: verified, turned into signals, replays harmless."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

WEBHOOKS = "/v1/provider/webhooks"
ACCEPT = {"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"}


def _signed(secret: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Signature": signature, "Content-Type": "application/json"}


def _event(payment_id: str = "pay_unknown", refund_id: str = "re_unknown") -> dict[str, Any]:
    return {
        "id": "evt_test",
        "type": "refund.succeeded",
        "refund": {
            "id": refund_id,
            "payment_id": payment_id,
            "amount": 1000,
            "currency": "KRW",
            "status": "succeeded",
        },
    }


async def test_the_providers_webhook_completes_a_pending_refund(shop, temporal, hook_stack):
    """The sandbox settles the refund and posts the webhook; the hook signals the run.

    The settlement time falls between two polls of the worker, so the signal is what ends
    the wait; the history shows it.
    """
    payment = await shop.card_payment(30000, refund="pending", settle_after_seconds=2.5)
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await shop.request_cancellation(order_id)
    await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled", within=15)
    reference = final["refunds"][0]["provider_reference"]

    history = await temporal.get_workflow_handle(final["cancellation_id"]).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert [s.signal_name for s in signals] == ["provider_refund_settled"]

    # The provider retries deliveries: a replay is answered and changes nothing.
    body, headers = _signed(hook_stack.settings.provider_webhook_secret, _event(payment, reference))
    replay = await shop.http.post(WEBHOOKS, content=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json() == {"ignored": True}
    assert (await shop.view(order_id))["history"] == final["history"]


async def test_a_missing_or_wrong_signature_is_unauthorized(anonymous, hook_stack):
    body, headers = _signed(hook_stack.settings.provider_webhook_secret, _event())
    missing = await anonymous.post(WEBHOOKS, content=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    forged, forged_headers = _signed("another-secret", _event())
    wrong = await anonymous.post(WEBHOOKS, content=forged, headers=forged_headers)
    assert wrong.status_code == 401
    tampered = await anonymous.post(WEBHOOKS, content=body + b" ", headers=headers)
    assert tampered.status_code == 401


async def test_events_nobody_waits_for_are_ignored(anonymous, hook_stack):
    secret = hook_stack.settings.provider_webhook_secret
    for event in [
        _event(),
        {"id": "evt_2", "type": "payment.captured", "payment": {"id": "pay_1"}},
        _event() | {"refund": _event()["refund"] | {"status": "failed"}},
    ]:
        body, headers = _signed(secret, event)
        answer = await anonymous.post(WEBHOOKS, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ignored": True}


async def test_a_signed_but_malformed_event_is_a_validation_error(anonymous, hook_stack):
    secret = hook_stack.settings.provider_webhook_secret
    for body in [b"{not json", b"[]", json.dumps({"type": "refund.succeeded"}).encode()]:
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        answer = await anonymous.post(
            WEBHOOKS,
            content=body,
            headers={"X-Signature": signature, "Content-Type": "application/json"},
        )
        assert answer.status_code == 422, body
        assert answer.json()["error"]["code"] == "validation_error"
