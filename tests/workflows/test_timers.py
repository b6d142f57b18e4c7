"""Timers on the time-skipping test server: the merchant's reminder and the undo window."""

from datetime import timedelta

import pytest

from domain.cancellation import Attention, CancellationStatus
from domain.errors import CancellationError, ErrorCode
from domain.requests import AcceptRequest, StartRequest, UndoRequest
from workflows.search_attributes import NEEDS_ATTENTION

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")


async def test_merchant_is_reminded_when_the_decision_is_overdue(ts):
    """Rule 4: after request_reminder_after the merchant is reminded and the run flagged."""
    await ts.settings(request_reminder_after=timedelta(hours=2))
    order_id = await ts.order()
    view, _ = await ts.client.start_cancellation(ts.shop_id, order_id, CUSTOMER)

    await ts.env.sleep(timedelta(hours=1))
    assert (await ts.view(view.cancellation_id)).needs_attention is None
    assert ("merchant", "reminder") not in await ts.outbox()

    await ts.env.sleep(timedelta(hours=1, minutes=5))
    reminded = await ts.wait_for(view.cancellation_id, lambda v: v.needs_attention is not None)
    assert reminded.needs_attention is Attention.DECISION_OVERDUE
    assert reminded.status is CancellationStatus.REQUESTED
    assert ("merchant", "reminder") in await ts.outbox()
    description = await ts.handle(view.cancellation_id).describe()
    assert description.typed_search_attributes.get(NEEDS_ATTENTION) == "decision_overdue"

    # Once is enough: no second reminder a day later, and accepting clears the mark.
    await ts.env.sleep(timedelta(days=1))
    assert (await ts.outbox()).count(("merchant", "reminder")) == 1
    accepted = await ts.client.accept(
        ts.shop_id, order_id, AcceptRequest(reason_code="changed_mind")
    )
    assert accepted.needs_attention is None
    # Let the run settle: an activity left behind by a stopped worker would hold the test
    # server's clock for the next test.
    await ts.wait_status(view.cancellation_id, CancellationStatus.CANCELED)


async def test_run_closes_when_the_undo_window_has_passed(ts):
    """After canceled, the run waits out the shop's undo window and then closes."""
    await ts.settings(undo_window=timedelta(days=3))
    order_id = await ts.order()
    view, _ = await ts.client.start_cancellation(ts.shop_id, order_id, CUSTOMER)
    await ts.client.accept(ts.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
    canceled = await ts.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert canceled.undo_until - canceled.canceled_at == timedelta(days=3)

    await ts.env.sleep(timedelta(days=2))
    description = await ts.handle(view.cancellation_id).describe()
    assert description.status.name == "RUNNING"

    # Handles not returned by start_workflow don't unlock time skipping: sleep explicitly.
    await ts.env.sleep(timedelta(days=1, minutes=1))
    result = await ts.handle(view.cancellation_id).result()
    assert result.status is CancellationStatus.CANCELED
    assert result.closed
    stored = await ts.client.get_cancellation(ts.shop_id, order_id)
    assert stored.status is CancellationStatus.CANCELED


async def test_an_undo_window_of_zero_closes_the_run_as_soon_as_it_is_canceled(ts):
    """``undo_window`` ``PT0S``: no undo. The canceled run closes without starting a timer,
    and an undo is refused with ``undo_window_closed``."""
    await ts.settings(undo_window=timedelta(0))
    order_id = await ts.order()
    merchant = StartRequest(
        initiated_by="merchant",
        channel="admin",
        reason_code="sold_out",
        accept=AcceptRequest(reason_code="sold_out"),
    )
    view, _ = await ts.client.start_cancellation(ts.shop_id, order_id, merchant)
    handle = ts.handle(view.cancellation_id)
    result = await handle.result()  # no timer to skip: the run ends by itself
    assert result.status is CancellationStatus.CANCELED
    assert result.closed
    assert result.undo_until == result.canceled_at
    assert result.allowed_actions == []
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.HasField("timer_started_event_attributes")]

    with pytest.raises(CancellationError) as refused:
        await ts.client.undo(ts.shop_id, order_id, UndoRequest(reason="oops"))
    assert refused.value.code is ErrorCode.UNDO_WINDOW_CLOSED
    stored = await ts.client.get_cancellation(ts.shop_id, order_id)
    assert stored.status is CancellationStatus.CANCELED
    assert stored.closed
    assert stored.allowed_actions == []
