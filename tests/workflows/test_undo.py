"""Undo (rule 11): check with the provider first, take everything back, never lose money.

After each scenario the sandbox ledger, the balances, the stock and the order status are
checked against what the store is owed.
"""

import asyncio
from datetime import timedelta

import pytest

from domain.bank import BankAccount
from domain.cancellation import Attention, CancellationStatus, RefundStatus
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus, TenderKind
from domain.requests import AcceptRequest, RepaymentRequest, StartRequest, UndoRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

MERCHANT = StartRequest(
    initiated_by="merchant",
    channel="admin",
    reason_code="sold_out",
    accept=AcceptRequest(reason_code="sold_out"),
)
UNDO = UndoRequest(reason="customer wants it after all")
ACCOUNT = BankAccount(bank="Shinhan", account_number="110-123-456789", holder="Kim Minji")


async def _canceled(h, start=MERCHANT, **order):
    """A canceled order with 5 mugs and 5 tees in stock after the restock."""
    await h.store.put_stock(h.shop_id, "sku-mug", 3)
    await h.store.put_stock(h.shop_id, "sku-tee", 4)
    order_id = await h.order(**order)
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, start)
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    return order_id, view.cancellation_id


async def _movements(h, order_id):
    """The sandbox ledger of the order's card payment, without the authorization."""
    order = await h.store.get_order(h.shop_id, order_id)
    payment = next(t.payment_id for t in order.tenders if t.payment_id)
    return [(e["type"], e["amount"]) for e in await h.ledger(payment)][1:]


async def _stock(h):
    return (
        await h.store.get_stock(h.shop_id, "sku-mug"),
        await h.store.get_stock(h.shop_id, "sku-tee"),
    )


async def _refused(coro, code):
    with pytest.raises(CancellationError) as info:
        await coro
    assert info.value.code is code, info.value
    return info.value


async def test_restorable_card_refund_is_recaptured_and_the_order_restored(h):
    order_id, cid = await _canceled(h)
    assert await _stock(h) == (5, 5)
    view = await h.client.undo(h.shop_id, order_id, UNDO)
    assert view.status is CancellationStatus.UNDONE
    assert view.order_status is OrderStatus.PAID
    assert await h.order_status(order_id) is OrderStatus.PAID
    assert await _movements(h, order_id) == [
        ("capture", 30000),
        ("refund", 30000),
        ("recapture", 30000),
    ]
    assert await _stock(h) == (3, 4)
    assert ("customer", "undone") in await h.outbox()
    events = await h.events(cid)
    assert events[-2:] == ["undo_started", "undone"]
    assert (await h.handle(cid).result()).status is CancellationStatus.UNDONE


async def test_voided_authorization_is_authorized_again(h):
    order_id, _ = await _canceled(h, card_behavior={"capture": False})
    view = await h.client.undo(h.shop_id, order_id, UNDO)
    assert view.status is CancellationStatus.UNDONE
    assert [t for t, _ in await _movements(h, order_id)] == ["void", "recapture"]


async def test_unrecoverable_payment_refuses_then_repayment_completes(h):
    """not_possible: refused and nothing changes; with require_repayment the customer pays."""
    order_id, cid = await _canceled(h, card_behavior={"recapture": "not_possible"})
    err = await _refused(h.client.undo(h.shop_id, order_id, UNDO), ErrorCode.RECAPTURE_UNAVAILABLE)
    assert "not_possible" in err.message
    current = await h.view(cid)
    assert current.status is CancellationStatus.CANCELED
    assert await _stock(h) == (5, 5)
    assert await h.order_status(order_id) is OrderStatus.CANCELED

    view = await h.client.undo(
        h.shop_id, order_id, UndoRequest(reason="again", require_repayment=True)
    )
    assert view.status is CancellationStatus.AWAITING_REPAYMENT
    assert view.repayment_due.amount == 30000
    assert view.allowed_actions == ["repayment"]
    assert await h.order_status(order_id) is OrderStatus.AWAITING_PAYMENT
    assert await _stock(h) == (3, 4)

    partly = await h.client.confirm_repayment(
        h.shop_id, order_id, RepaymentRequest(reference="PAY-1", amount=10000)
    )
    assert partly.status is CancellationStatus.AWAITING_REPAYMENT
    assert partly.repayment_due.amount == 20000
    done = await h.client.confirm_repayment(
        h.shop_id, order_id, RepaymentRequest(reference="PAY-2", amount=20000)
    )
    assert done.status is CancellationStatus.UNDONE
    assert await h.order_status(order_id) is OrderStatus.PAID
    assert await _movements(h, order_id) == [("capture", 30000), ("refund", 30000)]


async def test_bank_deposit_refund_must_be_paid_again(h):
    start = StartRequest(
        initiated_by="merchant",
        channel="admin",
        accept=AcceptRequest(reason_code="sold_out", bank_account=ACCOUNT),
    )
    order_id = await h.order(tenders=[(TenderKind.BANK_TRANSFER, 30000)])
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, start)
    line = (await h.wait_for(view.cancellation_id, lambda v: v.refunds)).refunds[0]
    from domain.requests import ConfirmRefundRequest

    await h.client.confirm_refund(
        h.shop_id, order_id, line.refund_id, ConfirmRefundRequest(reference="TX")
    )
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    undoing = await h.client.undo(h.shop_id, order_id, UNDO)
    assert undoing.status is CancellationStatus.AWAITING_REPAYMENT
    assert undoing.repayment_due.amount == 30000
    done = await h.client.confirm_repayment(
        h.shop_id, order_id, RepaymentRequest(reference="DEP-9", amount=30000)
    )
    assert done.status is CancellationStatus.UNDONE
    assert await h.order_status(order_id) is OrderStatus.PAID


async def test_out_of_stock_refuses_and_changes_nothing(h):
    order_id, cid = await _canceled(h)
    await h.store.put_stock(h.shop_id, "sku-mug", 1)
    err = await _refused(h.client.undo(h.shop_id, order_id, UNDO), ErrorCode.OUT_OF_STOCK)
    assert "sku-mug" in err.message
    assert (await h.view(cid)).status is CancellationStatus.CANCELED
    assert await _stock(h) == (1, 5)
    assert await _movements(h, order_id) == [("capture", 30000), ("refund", 30000)]
    assert await h.order_status(order_id) is OrderStatus.CANCELED


async def test_points_and_credits_are_taken_back(h):
    await h.store.put_balances(h.shop_id, "cust-1", 0, 0)
    order_id, _ = await _canceled(
        h, tenders=[(TenderKind.CARD, 20000), (TenderKind.POINTS, 6000), (TenderKind.CREDITS, 4000)]
    )
    assert await h.balances() == (6000, 4000)
    view = await h.client.undo(h.shop_id, order_id, UNDO)
    assert view.status is CancellationStatus.UNDONE
    assert await h.balances() == (0, 0)
    assert await _movements(h, order_id) == [
        ("capture", 20000),
        ("refund", 20000),
        ("recapture", 20000),
    ]


async def test_spent_points_refuse_the_undo(h):
    await h.store.put_balances(h.shop_id, "cust-1", 0, 0)
    order_id, cid = await _canceled(h, tenders=[(TenderKind.POINTS, 30000)])
    await h.store.put_balances(h.shop_id, "cust-1", 100, 0)
    err = await _refused(h.client.undo(h.shop_id, order_id, UNDO), ErrorCode.INVALID_TRANSITION)
    assert "spent" in err.message
    assert (await h.view(cid)).status is CancellationStatus.CANCELED
    assert await _stock(h) == (5, 5)


async def test_undo_while_in_progress_cancels_unexecuted_refunds(h):
    """Lines not executed yet are canceled; a bank deposit never made needs no repayment."""
    order_id = await h.order(tenders=[(TenderKind.BANK_TRANSFER, 30000)])
    start = StartRequest(
        initiated_by="merchant",
        channel="admin",
        accept=AcceptRequest(reason_code="sold_out", bank_account=ACCOUNT),
    )
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, start)
    await h.wait_for(view.cancellation_id, lambda v: v.refunds)
    undone = await h.client.undo(h.shop_id, order_id, UNDO)
    assert undone.status is CancellationStatus.UNDONE
    assert [r.status for r in undone.refunds] == [RefundStatus.CANCELED]
    assert await h.order_status(order_id) is OrderStatus.PAID


async def test_undo_waits_for_a_refund_in_flight(h):
    order_id = await h.order(card_behavior={"refund": "pending", "settle_after_seconds": 2})
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, MERCHANT)
    await h.wait_refund_at_provider(view.cancellation_id)
    undone = await h.client.undo(h.shop_id, order_id, UNDO)
    assert undone.status is CancellationStatus.UNDONE
    assert await _movements(h, order_id) == [
        ("capture", 30000),
        ("refund", 30000),
        ("recapture", 30000),
    ]


async def test_undo_twice_is_idempotent_and_then_refused(h):
    order_id, cid = await _canceled(h)
    first = await h.client.undo(h.shop_id, order_id, UNDO, idempotency_key="undo-1")
    again = await h.client.undo(h.shop_id, order_id, UNDO, idempotency_key="undo-1")
    assert first.status is again.status is CancellationStatus.UNDONE
    await h.handle(cid).result()
    await _refused(h.client.undo(h.shop_id, order_id, UNDO), ErrorCode.INVALID_TRANSITION)
    assert await _movements(h, order_id) == [
        ("capture", 30000),
        ("refund", 30000),
        ("recapture", 30000),
    ]


async def test_recapture_refused_after_the_check_rolls_back(h):
    """The provider said restorable, then refused: every step is reversed and flagged."""
    order_id, cid = await _canceled(h)
    payment = (await h.store.get_order(h.shop_id, order_id)).tenders[0].payment_id
    await h.provider._http.put("/v1/faults", json={"hang_rate": 1.0, "hang_seconds": 2})
    try:
        undo = asyncio.create_task(h.client.undo(h.shop_id, order_id, UNDO))
        await h.wait_status(cid, CancellationStatus.UNDOING)
    finally:
        await h.provider._http.put("/v1/faults", json={})
    # Someone else takes the money back first, so the workflow's recapture can't happen.
    await h.provider.recapture(payment, 30000, "outside-recapture")
    await _refused(undo, ErrorCode.RECAPTURE_UNAVAILABLE)
    view = await h.view(cid)
    assert view.status is CancellationStatus.CANCELED
    assert view.needs_attention is Attention.UNDO_FAILED
    assert await _stock(h) == (5, 5)
    assert await h.order_status(order_id) is OrderStatus.CANCELED
    assert (await h.events(cid))[-2:] == ["undo_started", "undo_rolled_back"]


async def test_repayment_window_lapsing_reverses_the_undo(ts):
    await ts.settings(repayment_window=timedelta(days=2), undo_window=timedelta(days=30))
    await ts.store.put_balances(ts.shop_id, "cust-1", 0, 0)
    order_id, cid = await _canceled(
        ts,
        tenders=[(TenderKind.CARD, 25000), (TenderKind.POINTS, 5000)],
        card_behavior={"recapture": "reauth_required"},
    )
    view = await ts.client.undo(
        ts.shop_id, order_id, UndoRequest(reason="r", require_repayment=True)
    )
    assert view.status is CancellationStatus.AWAITING_REPAYMENT
    assert await ts.balances() == (0, 0)
    assert await _stock(ts) == (3, 4)

    await ts.env.sleep(timedelta(days=2, minutes=1))
    back = await ts.wait_status(cid, CancellationStatus.CANCELED)
    assert back.repayment_due is None
    assert await ts.balances() == (5000, 0)
    assert await _stock(ts) == (5, 5)
    assert await ts.order_status(order_id) is OrderStatus.CANCELED
    assert (await ts.events(cid))[-1] == "repayment_lapsed"
    assert [r.status for r in back.refunds] == [RefundStatus.SUCCEEDED] * 2
    # The undo window still counts from the first cancellation.
    assert back.undo_until == view.undo_until


async def test_undo_after_the_window_is_refused_clearly(ts):
    await ts.settings(undo_window=timedelta(days=1))
    order_id, cid = await _canceled(ts)
    await ts.env.sleep(timedelta(days=1, minutes=1))
    await ts.handle(cid).result()
    err = await _refused(ts.client.undo(ts.shop_id, order_id, UNDO), ErrorCode.UNDO_WINDOW_CLOSED)
    assert "order again" in err.message
