"""The seed's main flow: a customer asks, the merchant accepts, the card is refunded."""

import pytest

from domain.cancellation import CancellationStatus, ReasonCode, RefundStatus
from domain.order import OrderStatus
from domain.requests import AcceptRequest, StartRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER_REQUEST = StartRequest(
    initiated_by="customer", channel="my_account", reason_code="changed_mind"
)


async def test_customer_request_accepted_is_refunded_and_canceled(h):
    """Request → accept → provider refund → canceled; the ledger has exactly one refund."""
    order_id = await h.order()
    view, created = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
    assert created
    assert view.cancellation_id == f"cancellation~{h.shop_id}~{order_id}~1"
    assert view.status is CancellationStatus.REQUESTED
    assert view.order_status is OrderStatus.CANCELLATION_REQUESTED
    assert set(view.allowed_actions) == {"accept", "reject", "withdraw"}
    assert await h.order_status(order_id) is OrderStatus.CANCELLATION_REQUESTED

    view = await h.client.accept(
        h.shop_id, order_id, AcceptRequest(reason_code=ReasonCode.CHANGED_MIND, reason="asked")
    )
    assert view.status is CancellationStatus.IN_PROGRESS
    assert view.refundable is not None and view.refundable.amount == 30000

    final = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert final.refunded == final.refundable
    assert [r.status for r in final.refunds] == [RefundStatus.SUCCEEDED]
    assert final.undo_until is not None and final.canceled_at is not None
    assert await h.order_status(order_id) is OrderStatus.CANCELED
    refunds = await h.refunds_in_ledger(order_id)
    assert [(e["type"], e["amount"]) for e in refunds] == [("refund", 30000)]
    assert refunds[0]["idempotency_key"] == f"{view.cancellation_id}-r1/try-1"


async def test_acceptance_restocks_items_and_notifies(h):
    """Accepting puts the items back in stock; the audit trail and outbox record each step."""
    await h.store.put_stock(h.shop_id, "sku-mug", 5)
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
    await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="sold_out"))
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)

    assert await h.store.get_stock(h.shop_id, "sku-mug") == 7
    assert await h.store.get_stock(h.shop_id, "sku-tee") == 1
    assert await h.events(view.cancellation_id) == [
        "requested",
        "accepted",
        "refund_succeeded",
        "canceled",
    ]
    assert await h.outbox() == [
        ("merchant", "new_request"),
        ("customer", "accepted"),
        ("customer", "canceled"),
    ]
    stored = (await h.store.get_cancellation(h.shop_id, view.cancellation_id)).view
    assert stored.status is CancellationStatus.CANCELED
    assert [e.event for e in stored.history] == [
        "requested",
        "accepted",
        "refund_succeeded",
        "canceled",
    ]


async def test_restock_false_leaves_stock_alone(h):
    """Defective goods are not restocked when the merchant says so."""
    await h.store.put_stock(h.shop_id, "sku-mug", 5)
    order_id = await h.order()
    await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
    view = await h.client.accept(
        h.shop_id, order_id, AcceptRequest(reason_code="defective", restock=False)
    )
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert await h.store.get_stock(h.shop_id, "sku-mug") == 5


async def test_merchant_cancellation_starts_accepted(h):
    """A sold-out cancellation by the merchant needs no request and no decision (rule 5)."""
    order_id = await h.order()
    view, created = await h.client.start_cancellation(
        h.shop_id,
        order_id,
        StartRequest(
            initiated_by="merchant",
            channel="admin",
            reason_code="sold_out",
            accept=AcceptRequest(reason_code="sold_out", reason="supplier out"),
        ),
    )
    assert created
    assert view.status in (CancellationStatus.IN_PROGRESS, CancellationStatus.CANCELED)
    final = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert final.initiated_by == "merchant"
    assert final.reason_code is ReasonCode.SOLD_OUT
    assert await h.order_status(order_id) is OrderStatus.CANCELED


async def test_happy_path_history_is_lean(h):
    """The start rides on one update-with-start call; store writes are local-activity
    markers, so the only activity task is the provider refund."""
    order_id = await h.order()
    view, created = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
    assert created and view.order_status is OrderStatus.CANCELLATION_REQUESTED
    await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="sold_out"))
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)

    history = await h.handle(view.cancellation_id).fetch_history()
    kinds = [e.WhichOneof("attributes") for e in history.events]
    updates = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert updates == ["opened", "accept"]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["refund_payment"]
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    # The patch marker, then the store writes: open, accept, canceled.
    assert markers == ["core_patch"] + ["core_local_activity"] * 3
    # Three workflow tasks: start and open, accept, refund done → canceled.
    assert kinds.count("workflow_task_completed_event_attributes") == 3
    assert len(kinds) == 27
