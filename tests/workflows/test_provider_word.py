"""The provider has the last word on a refund (docs/rules.md, rule 7): a line fails only
when the provider says so, a late success or a reversal moves the line, the order and
``NeedsAttention``, and a long outage is visible while the run keeps asking."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from activities.provider import ProviderRefundSettled
from domain.cancellation import (
    Attention,
    CancellationStatus,
    CancellationView,
    RefundStatus,
    UndoInput,
)
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus
from domain.refund_plan import RefundChannel
from domain.requests import AcceptRequest, RetryRefundRequest, StartRequest
from workflows.order_cancellation import OrderCancellationWorkflow
from workflows.search_attributes import NEEDS_ATTENTION

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")
ACCEPT = AcceptRequest(reason_code="changed_mind")


async def _set_faults(provider_url: str, **faults: float) -> None:
    async with httpx.AsyncClient(base_url=provider_url, trust_env=False) as http:
        (await http.put("/v1/faults", json=faults)).raise_for_status()


async def _accepted_with_a_pending_refund(
    h, settle_after_seconds: float
) -> tuple[str, CancellationView, CancellationView]:
    """A customer's cancellation, accepted, whose card refund the provider keeps pending for
    ``settle_after_seconds``: its order id, its opening view, and its view once the provider
    has the refund."""
    order_id = await h.order(
        card_behavior={"refund": "pending", "settle_after_seconds": settle_after_seconds}
    )
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await h.client.accept(h.shop_id, order_id, ACCEPT)
    return order_id, view, await h.wait_refund_at_provider(view.cancellation_id)


async def _canceled_then_reversed(h) -> tuple[str, CancellationView, dict[str, Any]]:
    """A customer's cancellation whose card refund succeeded, then the provider reversed it
    and the reversal's webhook reached the run: the order id, the cancellation as it was
    canceled, and the provider's refund."""
    order_id = await h.order(
        card_behavior={"refund": "fail_after_success", "fail_after_seconds": 1}
    )
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await h.client.accept(h.shop_id, order_id, ACCEPT)
    canceled = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    reference = str(canceled.refunds[0].provider_reference)
    # The sandbox reverses the refund; its webhook reaches the run as the hook sends it.
    for _ in range(100):
        refund: dict[str, Any] = await h.provider.get_refund(reference)
        if refund["status"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert refund["status"] == "failed"
    await _reversal(h, canceled.cancellation_id, refund)
    return order_id, canceled, refund


async def _reversal(h, cancellation_id: str, refund: dict[str, Any]) -> None:
    """The provider's webhook saying ``refund`` failed, as the hook signals it."""
    await h.handle(cancellation_id).signal(
        OrderCancellationWorkflow.provider_refund_settled,
        ProviderRefundSettled(
            provider_reference=refund["id"], status="failed", failure_code=refund["failure_code"]
        ),
    )


async def test_a_refund_reversed_after_canceled_reopens_the_cancellation_for_a_person(h):
    """A refund the provider reverses after it succeeded (Stripe's refund.failed): the
    cancellation is refunding again, the order with it, flagged with the reason; the
    merchant's retry pays once more and the cancellation completes again."""
    order_id, view, refund = await _canceled_then_reversed(h)
    line = view.refunds[0]
    reference = str(line.provider_reference)
    reopened = await h.wait_for(
        view.cancellation_id, lambda v: v.status is CancellationStatus.IN_PROGRESS
    )
    assert reopened.needs_attention is Attention.REFUND_REVERSED
    assert reopened.refunds[0].status is RefundStatus.FAILED
    assert str(refund["failure_code"]) in str(reopened.refunds[0].failure)
    assert reopened.refunded is not None and reopened.refunded.amount == 0
    assert await h.order_status(order_id) is OrderStatus.CANCELLATION_IN_PROGRESS
    description = await h.handle(view.cancellation_id).describe()
    assert description.typed_search_attributes.get(NEEDS_ATTENTION) == "refund_reversed"
    assert "refund_reversed" in await h.events(view.cancellation_id)

    # An older refund.succeeded of the same refund, delivered after the reversal, changes
    # nothing: a reversal is final.
    await h.handle(view.cancellation_id).signal(
        OrderCancellationWorkflow.provider_refund_settled,
        ProviderRefundSettled(provider_reference=reference, status="succeeded"),
    )
    await asyncio.sleep(1)
    still = await h.view(view.cancellation_id)
    assert still.refunds[0].status is RefundStatus.FAILED
    assert still.needs_attention is Attention.REFUND_REVERSED

    await h.client.retry_refund(h.shop_id, order_id, line.refund_id, RetryRefundRequest())
    again = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert again.needs_attention is None
    assert await h.order_status(order_id) is OrderStatus.CANCELED
    ledger = [e["type"] for e in await h.ledger(line.payment_id or "")]
    assert ledger.count("refund") == 2 and ledger.count("refund_reversal") >= 1


async def test_a_reversal_repeated_after_the_switch_to_credits_changes_nothing(h):
    """The provider sends a refund's reversal again (a repeated or late webhook) after the
    merchant switched the reversed line to credits: the line is no longer the provider's,
    so the cancellation stays canceled and the credits are given once (found by the chaos
    run: the repeat reopened the switched line, and a second switch would have paid twice)."""
    order_id, view, refund = await _canceled_then_reversed(h)
    line = view.refunds[0]
    await h.wait_for(view.cancellation_id, lambda v: v.status is CancellationStatus.IN_PROGRESS)
    to_credits = RetryRefundRequest(method="credits")
    await h.client.retry_refund(h.shop_id, order_id, line.refund_id, to_credits)
    canceled = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert canceled.refunds[0].channel is RefundChannel.CREDITS

    await _reversal(h, view.cancellation_id, refund)
    await asyncio.sleep(1)

    still = await h.view(view.cancellation_id)
    assert (still.status, still.needs_attention) == (CancellationStatus.CANCELED, None)
    assert still.refunds[0].status is RefundStatus.SUCCEEDED
    assert still.refunded is not None and still.refunded.amount == line.amount
    assert await h.order_status(order_id) is OrderStatus.CANCELED
    assert await h.balances() == (0, line.amount)
    assert (await h.events(view.cancellation_id)).count("refund_reversed") == 1


async def test_a_pending_refund_the_provider_fails_then_settles_ends_succeeded(h):
    """The webhook's failure of a pending refund fails the line at once; the provider's
    later success of the same refund (a late webhook) moves it to succeeded."""
    _, view, processing = await _accepted_with_a_pending_refund(h, 3600)
    reference = str(processing.refunds[0].provider_reference)
    handle = h.handle(view.cancellation_id)
    await handle.signal(
        OrderCancellationWorkflow.provider_refund_settled,
        ProviderRefundSettled(provider_reference=reference, status="failed"),
    )
    failed = await h.wait_for(view.cancellation_id, lambda v: v.needs_attention is not None)
    assert failed.refunds[0].status is RefundStatus.FAILED
    assert failed.needs_attention is Attention.REFUND_FAILED

    await handle.signal(
        OrderCancellationWorkflow.provider_refund_settled,
        ProviderRefundSettled(provider_reference=reference, status="succeeded"),
    )
    done = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert done.refunds[0].status is RefundStatus.SUCCEEDED
    assert done.needs_attention is None
    assert "refund_succeeded_late" in await h.events(view.cancellation_id)


async def test_an_hour_without_the_provider_marks_the_run_until_it_answers(ts, provider_url):
    """Every POST to the provider fails for over an hour: the run says so
    (NeedsAttention=provider_unavailable), keeps the same key, and clears the mark once the
    provider answers; the refund is paid once."""
    order_id = await ts.order()
    view, _ = await ts.client.start_cancellation(ts.shop_id, order_id, CUSTOMER)
    await _set_faults(provider_url, error_rate=1.0)
    try:
        await ts.client.accept(ts.shop_id, order_id, ACCEPT)
        await ts.env.sleep(timedelta(minutes=30))
        assert (await ts.view(view.cancellation_id)).needs_attention is None
        await ts.env.sleep(timedelta(minutes=40))
        flagged = await ts.wait_for(
            view.cancellation_id,
            lambda v: v.needs_attention is Attention.PROVIDER_UNAVAILABLE,
        )
        assert flagged.refunds[0].status is RefundStatus.PROCESSING
        description = await ts.handle(view.cancellation_id).describe()
        assert description.typed_search_attributes.get(NEEDS_ATTENTION) == "provider_unavailable"
    finally:
        await _set_faults(provider_url)
    await ts.env.sleep(timedelta(minutes=2))
    done = await ts.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert done.needs_attention is None
    assert len(await ts.refunds_in_ledger(order_id)) == 1
    events = await ts.events(view.cancellation_id)
    assert "provider_unavailable" in events and "provider_answered" in events


async def test_a_switch_waits_for_what_the_provider_did_and_never_pays_twice(h):
    """A card line marked failed while the provider still works on it can't be switched to
    credits; once the provider paid it, the switch settles the line instead of giving
    credits on top of the card refund."""
    order_id, view, processing = await _accepted_with_a_pending_refund(h, 2)
    line = processing.refunds[0]
    await h.handle(view.cancellation_id).signal(
        OrderCancellationWorkflow.provider_refund_settled,
        ProviderRefundSettled(provider_reference=str(line.provider_reference), status="failed"),
    )
    await h.wait_for(view.cancellation_id, lambda v: v.refunds[0].status is RefundStatus.FAILED)
    to_credits = RetryRefundRequest(method="credits")
    with pytest.raises(CancellationError) as refused:
        await h.client.retry_refund(h.shop_id, order_id, line.refund_id, to_credits)
    assert refused.value.code is ErrorCode.INVALID_TRANSITION
    assert "still processing" in refused.value.message

    await asyncio.sleep(2.5)
    assert (await h.provider.get_refund(str(line.provider_reference)))["status"] == "succeeded"
    settled = await h.client.retry_refund(h.shop_id, order_id, line.refund_id, to_credits)
    assert settled.refunds[0].status is RefundStatus.SUCCEEDED
    assert settled.refunds[0].method.value == "original"
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert await h.balances() in (None, (0, 0))
    assert len(await h.refunds_in_ledger(order_id)) == 1
    assert "refund_reconciled" in await h.events(view.cancellation_id)


async def test_a_retry_after_the_providers_key_expired_never_refunds_twice(h, provider_url):
    """The provider applied the refund but its answer was lost; the retry comes after the
    provider forgot the idempotency key (a day later): the product asks first, by the refund
    id in the refund's metadata, and finds the refund instead of making a second one."""
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await _set_faults(provider_url, error_after_effect_rate=1.0)
    try:
        await h.client.accept(h.shop_id, order_id, ACCEPT)
        for _ in range(100):
            if await h.refunds_in_ledger(order_id):
                break
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=provider_url, trust_env=False) as http:
            advanced = await http.post("/v1/clock/advance", json={"seconds": 25 * 3600})
            advanced.raise_for_status()
    finally:
        await _set_faults(provider_url)
    done = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED, within=60)
    assert len(await h.refunds_in_ledger(order_id)) == 1
    assert done.refunded is not None and done.refunded.amount == done.refunds[0].amount


async def test_a_request_still_in_flight_at_the_provider_is_waited_for_not_failed(h, provider_url):
    """The first call hangs past our timeout while the provider still works on it; the
    retry with the same key gets 409 idempotency_key_in_use, a wait, not a failure."""
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await _set_faults(provider_url, slow_rate=1.0, hang_seconds=12)
    try:
        await h.client.accept(h.shop_id, order_id, ACCEPT)
        await h.wait_for(view.cancellation_id, lambda v: bool(v.refunds))
        await asyncio.sleep(11)
    finally:
        await _set_faults(provider_url)
    done = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED, within=60)
    assert done.refunds[0].status is RefundStatus.SUCCEEDED
    assert len(await h.refunds_in_ledger(order_id)) == 1


async def test_a_pending_refund_is_polled_without_a_deadline(h):
    """The first release polled a pending refund for at most 7 days (a schedule-to-close
    timeout) and then failed the line, although the provider might still settle it; the
    poll now has no deadline: the line fails only when the provider says so."""
    _, view, _ = await _accepted_with_a_pending_refund(h, 9 * 86400)
    polls = []
    for _ in range(100):
        history = await h.handle(view.cancellation_id).fetch_history()
        polls = [
            e.activity_task_scheduled_event_attributes
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name
            == "await_refund_settlement"
        ]
        if polls:
            break
        await asyncio.sleep(0.1)
    (poll,) = polls
    assert poll.schedule_to_close_timeout.ToTimedelta() == timedelta(0)
    assert (await h.view(view.cancellation_id)).refunds[0].status is RefundStatus.PROCESSING


async def test_an_undo_behind_a_refund_in_flight_says_what_it_waits_for(h):
    """The undo waits for a refund the provider still processes, and the run's current
    details say so instead of going quiet."""
    _, view, processing = await _accepted_with_a_pending_refund(h, 3)
    handle = h.handle(view.cancellation_id)
    await handle.signal(
        OrderCancellationWorkflow.undo_signal, UndoInput(reason="kept", actor="merchant")
    )
    for _ in range(100):
        metadata = await handle.query("__temporal_workflow_metadata")
        details = str(metadata.current_details)
        if "Undo requested" in details:
            break
        await asyncio.sleep(0.05)
    assert "waiting for the refunds in flight" in details
    assert processing.refunds[0].refund_id in details
    undone = await h.wait_status(view.cancellation_id, CancellationStatus.UNDONE, within=60)
    assert undone.refunds[0].status is RefundStatus.SUCCEEDED


async def test_a_void_whose_answer_was_lost_is_found_done_after_the_key_expired(h, provider_url):
    """An authorization released by a void whose answer was lost, retried after the
    provider forgot the key: the retry finds the payment voided and the line succeeds
    (release 1 voided again, was refused, and failed the line)."""
    order_id = await h.order(card_behavior={"capture": False})
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await _set_faults(provider_url, error_after_effect_rate=1.0)
    try:
        await h.client.accept(h.shop_id, order_id, ACCEPT)
        payment_id = (await h.store.get_order(h.shop_id, order_id)).tenders[0].payment_id
        assert payment_id is not None
        for _ in range(100):
            if [e for e in await h.ledger(payment_id) if e["type"] == "void"]:
                break
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=provider_url, trust_env=False) as http:
            (await http.post("/v1/clock/advance", json={"seconds": 25 * 3600})).raise_for_status()
    finally:
        await _set_faults(provider_url)
    done = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED, within=60)
    assert done.refunds[0].status is RefundStatus.SUCCEEDED
    assert [e["type"] for e in await h.ledger(payment_id)].count("void") == 1
