"""The provider's signed webhooks: verified with a timestamp, acted on once, never a lever
to grow a run's history."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.admin_store import AdminStore, ClaimOutcome
from activities.provider import ProviderRefundSettled

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

WEBHOOKS = "/v1/provider/webhooks"
ACCEPT = {"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"}
SIGNAL = "provider_refund_settled"


def _signature(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return digest.hexdigest()


def _signed(
    secret: str, event: dict[str, Any], *, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery signed as the provider signs, at ``at`` (now)."""
    body = json.dumps(event).encode()
    timestamp = int(time.time() if at is None else at)
    header = f"t={timestamp},v1={_signature(secret, body, timestamp)}"
    return body, {"X-Signature": header, "Content-Type": "application/json"}


def _event(
    payment_id: str = "pay_unknown",
    refund_id: str = "re_unknown",
    *,
    kind: str = "refund.succeeded",
    status: str = "succeeded",
    account: str | None = None,
) -> dict[str, Any]:
    """A refund event with a fresh id."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": kind,
        "account": account,
        "refund": {
            "id": refund_id,
            "payment_id": payment_id,
            "amount": 1000,
            "currency": "KRW",
            "status": status,
            "failure_code": "expired_or_canceled_card" if status == "failed" else None,
        },
    }


async def _signals(temporal: Client, workflow_id: str) -> list[ProviderRefundSettled]:
    """The ``provider_refund_settled`` signals in a run's history, decoded."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    settled = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attributes = event.workflow_execution_signaled_event_attributes
        if attributes.signal_name != SIGNAL:
            continue
        [value] = await temporal.data_converter.decode(
            attributes.input.payloads, [ProviderRefundSettled]
        )
        settled.append(value)
    return settled


async def _history_length(temporal: Client, workflow_id: str) -> int:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def _settled_history_length(temporal: Client, workflow_id: str) -> int:
    """The history's length once the run has stopped adding to it for half a second."""
    length = await _history_length(temporal, workflow_id)
    while True:
        await asyncio.sleep(0.5)
        again = await _history_length(temporal, workflow_id)
        if again == length:
            return length
        length = again


async def _wait_for_signals(
    temporal: Client, workflow_id: str, count: int, within: float = 20.0
) -> list[ProviderRefundSettled]:
    deadline = time.monotonic() + within
    while True:
        signals = await _signals(temporal, workflow_id)
        if len(signals) >= count:
            return signals
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(signals)} of {count} signals within {within}s")
        await asyncio.sleep(0.2)


async def _canceled_card_order(shop: Any, **behavior: Any) -> tuple[str, str, dict[str, Any]]:
    """``(payment_id, order_id, view)`` of an order paid by card and canceled in full."""
    payment = await shop.card_payment(30000, **behavior)
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await shop.request_cancellation(order_id)
    await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled", within=15)
    return payment, order_id, final


async def test_the_providers_webhook_completes_a_pending_refund(shop, temporal, hook_stack):
    """The sandbox settles the refund and posts the webhook; the hook signals the run.

    The settlement time falls between two polls of the worker, so the signal is what ends
    the wait; the history shows it. A later success for the same refund changes nothing.
    """
    payment, order_id, final = await _canceled_card_order(
        shop, refund="pending", settle_after_seconds=2.5
    )
    reference = final["refunds"][0]["provider_reference"]

    signals = await _signals(temporal, final["cancellation_id"])
    assert [(s.provider_reference, s.status) for s in signals] == [(reference, "succeeded")]

    secret = hook_stack.settings.provider_webhook_secret
    body, headers = _signed(secret, _event(payment, reference))
    late = await shop.http.post(WEBHOOKS, content=body, headers=headers)
    assert late.status_code == 200
    assert late.json() == {"ignored": True}
    assert (await shop.view(order_id))["history"] == final["history"]


async def test_a_replayed_delivery_with_an_old_timestamp_is_unauthorized(anonymous, hook_stack):
    """A captured delivery can't be replayed after 5 minutes, nor signed for the future."""
    secret = hook_stack.settings.provider_webhook_secret
    now = time.time()
    for at in (now - 301, now + 301, now - 10 * 86400):
        body, headers = _signed(secret, _event(), at=at)
        answer = await anonymous.post(WEBHOOKS, content=body, headers=headers)
        assert answer.status_code == 401, at - now
        assert answer.json()["error"]["code"] == "unauthorized"
    body, headers = _signed(secret, _event(), at=now - 240)
    within = await anonymous.post(WEBHOOKS, content=body, headers=headers)
    assert (within.status_code, within.json()) == (200, {"ignored": True})


async def test_a_missing_or_wrong_signature_is_unauthorized(anonymous, hook_stack):
    secret = hook_stack.settings.provider_webhook_secret
    body, headers = _signed(secret, _event())
    missing = await anonymous.post(WEBHOOKS, content=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    forged, forged_headers = _signed("another-secret", _event())
    wrong = await anonymous.post(WEBHOOKS, content=forged, headers=forged_headers)
    assert wrong.status_code == 401
    tampered = await anonymous.post(WEBHOOKS, content=body + b" ", headers=headers)
    assert tampered.status_code == 401
    now = int(time.time())
    good = _signature(secret, body, now)
    garbled = [
        hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),  # the old, untimed form
        f"v1={good}",
        f"t={now}",
        f"t={now},v1=",
        f"t={now},v1={good[:-2]}",
        f"t=soon,v1={good}",
        f"t={now},t={now},v1={good}",
        f"t={now};v1={good}",
        f"t={now},v1={good}," + "v1=00," * 200,
    ]
    for header in garbled:
        answer = await anonymous.post(
            WEBHOOKS, content=body, headers={"X-Signature": header, "Content-Type": "x"}
        )
        assert answer.status_code == 401, header


async def test_one_matching_signature_among_several_is_enough(anonymous, hook_stack):
    """While a provider rolls its secret it signs with both: any `v1` may match."""
    secret = hook_stack.settings.provider_webhook_secret
    body = json.dumps(_event()).encode()
    now = int(time.time())
    header = f"t={now},v1={_signature('old-secret', body, now)},v1={_signature(secret, body, now)}"

    answer = await anonymous.post(
        WEBHOOKS, content=body, headers={"X-Signature": header, "Content-Type": "application/json"}
    )

    assert (answer.status_code, answer.json()) == (200, {"ignored": True})


async def test_events_nobody_waits_for_are_ignored(anonymous, hook_stack):
    secret = hook_stack.settings.provider_webhook_secret
    for event in [
        _event(),
        _event(kind="refund.failed", status="failed"),
        {"id": f"evt_{uuid.uuid4().hex}", "type": "payment.captured", "payment": {"id": "pay_1"}},
        _event(status="failed"),
        _event(kind="refund.failed"),
    ]:
        body, headers = _signed(secret, event)
        answer = await anonymous.post(WEBHOOKS, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ignored": True}


async def test_a_signed_but_malformed_event_is_a_validation_error(anonymous, hook_stack):
    secret = hook_stack.settings.provider_webhook_secret
    for body in [b"{not json", b"[]", json.dumps({"type": "refund.succeeded"}).encode()]:
        now = int(time.time())
        answer = await anonymous.post(
            WEBHOOKS,
            content=body,
            headers={
                "X-Signature": f"t={now},v1={_signature(secret, body, now)}",
                "Content-Type": "application/json",
            },
        )
        assert answer.status_code == 422, body
        assert answer.json()["error"]["code"] == "validation_error"


async def test_a_refund_failed_reaches_the_canceled_run(shop, temporal, hook_stack):
    """The sandbox fails a refund after the cancellation completed; the run hears of it.

    (What the run then does is the workflow's business; here: the signal arrives, once,
    with the provider's failure code.)
    """
    _, _, final = await _canceled_card_order(
        shop, refund="fail_after_success", fail_after_seconds=4
    )
    reference = final["refunds"][0]["provider_reference"]

    signals = await _wait_for_signals(temporal, final["cancellation_id"], 1)

    assert [(s.provider_reference, s.status, s.failure_code) for s in signals] == [
        (reference, "failed", "expired_or_canceled_card")
    ]


async def test_an_event_id_is_acted_on_once(shop, temporal, hook_stack):
    """The second delivery of an event is ignored and adds nothing to the run's history."""
    payment, _, final = await _canceled_card_order(shop)
    workflow_id = final["cancellation_id"]
    reference = final["refunds"][0]["provider_reference"]
    event = _event(payment, reference, kind="refund.failed", status="failed")
    secret = hook_stack.settings.provider_webhook_secret

    body, headers = _signed(secret, event)
    first = await shop.http.post(WEBHOOKS, content=body, headers=headers)
    assert (first.status_code, first.json()) == (200, {"ignored": False})
    assert len(await _signals(temporal, workflow_id)) == 1
    length = await _settled_history_length(temporal, workflow_id)

    body, headers = _signed(secret, event)  # the provider's redelivery: signed anew
    second = await shop.http.post(WEBHOOKS, content=body, headers=headers)

    assert (second.status_code, second.json()) == (200, {"ignored": True})
    await asyncio.sleep(0.5)
    assert await _history_length(temporal, workflow_id) == length


async def test_events_for_refunds_the_run_does_not_hold_signal_nothing(shop, temporal, hook_stack):
    """Signed events naming the run's payment but not its refund can't grow its history.

    The run waits for a pending refund; only the event about that refund reaches it.
    """
    payment = await shop.card_payment(30000, refund="pending", settle_after_seconds=3600)
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await shop.request_cancellation(order_id)
    await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    waiting = await shop.wait_for(
        order_id, lambda v: bool(v["refunds"] and v["refunds"][0]["provider_reference"])
    )
    workflow_id = waiting["cancellation_id"]
    reference = waiting["refunds"][0]["provider_reference"]
    secret = hook_stack.settings.provider_webhook_secret
    length = await _settled_history_length(temporal, workflow_id)

    for refund_id in ("re_other", "re_another", reference + "x"):
        body, headers = _signed(secret, _event(payment, refund_id))
        answer = await shop.http.post(WEBHOOKS, content=body, headers=headers)
        assert answer.json() == {"ignored": True}
    await asyncio.sleep(0.5)
    assert await _history_length(temporal, workflow_id) == length

    body, headers = _signed(secret, _event(payment, reference))
    settled = await shop.http.post(WEBHOOKS, content=body, headers=headers)

    assert settled.json() == {"ignored": False}
    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled", within=15)
    assert final["refunds"][0]["status"] == "succeeded"
    assert len(await _signals(temporal, workflow_id)) == 1


async def test_an_event_being_handled_elsewhere_is_delivered_again_later(
    anonymous, hook_stack, pool
):
    """A delivery that meets its event claimed by a running request gets `409` (retry), not
    `ignored`: should that request fail, the event must still be acted on."""
    store = AdminStore(pool)
    event = _event()
    secret = hook_stack.settings.provider_webhook_secret
    claimed = await store.claim_provider_event(event["id"], "", timedelta(seconds=30))

    body, headers = _signed(secret, event)
    meanwhile = await anonymous.post(WEBHOOKS, content=body, headers=headers)
    await store.release_provider_event(event["id"], "")  # that request failed
    body, headers = _signed(secret, event)
    redelivered = await anonymous.post(WEBHOOKS, content=body, headers=headers)
    body, headers = _signed(secret, event)
    again = await anonymous.post(WEBHOOKS, content=body, headers=headers)

    assert claimed is ClaimOutcome.CLAIMED
    assert (meanwhile.status_code, meanwhile.json()["error"]["code"]) == (
        409,
        "invalid_transition",
    )
    assert (redelivered.status_code, redelivered.json()) == (200, {"ignored": True})
    assert await store.claim_provider_event(event["id"], "", timedelta(0)) is ClaimOutcome.REPLAY
    assert (again.status_code, again.json()) == (200, {"ignored": True})


async def test_a_claim_left_by_a_dead_request_expires(pool):
    store = AdminStore(pool)
    event_id = f"evt_{uuid.uuid4().hex}"
    lease = timedelta(seconds=0.2)

    first = await store.claim_provider_event(event_id, "acct_x", lease)
    second = await store.claim_provider_event(event_id, "acct_x", lease)
    other_account = await store.claim_provider_event(event_id, "acct_y", lease)
    await asyncio.sleep(0.3)
    after_lease = await store.claim_provider_event(event_id, "acct_x", lease)

    assert (first, second, other_account, after_lease) == (
        ClaimOutcome.CLAIMED,
        ClaimOutcome.IN_PROGRESS,
        ClaimOutcome.CLAIMED,
        ClaimOutcome.CLAIMED,
    )
