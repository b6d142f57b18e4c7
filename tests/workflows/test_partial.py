"""Partial cancellation end to end: items and quantities, their exact share, undo."""

import pytest

from domain.cancellation import CanceledItem, CancellationStatus
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus, TenderKind
from domain.requests import AcceptRequest, StartRequest, UndoRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _merchant(*items: tuple[str, int]) -> StartRequest:
    return StartRequest(
        initiated_by="merchant",
        channel="admin",
        reason_code="sold_out",
        items=[CanceledItem(item_id=i, quantity=q) for i, q in items] if items else None,
        accept=AcceptRequest(reason_code="sold_out"),
    )


async def _card_refunds(h, order_id):
    order = await h.store.get_order(h.shop_id, order_id)
    payment = next(t.payment_id for t in order.tenders if t.payment_id)
    return [e["amount"] for e in await h.ledger(payment) if e["type"] == "refund"]


async def test_card_points_credits_order_canceled_in_three_steps(h):
    """Each step refunds its items' share over the tenders; shipping goes with the last."""
    await h.store.put_balances(h.shop_id, "cust-1", 0, 0)
    await h.store.put_stock(h.shop_id, "sku-mug", 0)
    await h.store.put_stock(h.shop_id, "sku-tee", 0)
    # 2 mugs at 10,000 and a tee at 7,000, shipping 3,000: 30,000 = card 18,000 + points
    # 6,000 + credits 6,000.
    order_id = await h.order(
        tenders=[(TenderKind.CARD, 18000), (TenderKind.POINTS, 6000), (TenderKind.CREDITS, 6000)]
    )

    first, _ = await h.client.start_cancellation(h.shop_id, order_id, _merchant(("i1", 1)))
    first = await h.wait_status(first.cancellation_id, CancellationStatus.CANCELED)
    assert first.refundable.amount == 10000
    assert {r.tender_kind: r.amount for r in first.refunds} == {
        TenderKind.CARD: 6000,
        TenderKind.POINTS: 2000,
        TenderKind.CREDITS: 2000,
    }
    assert await h.order_status(order_id) is OrderStatus.PAID
    assert (await h.store.get_order(h.shop_id, order_id)).canceled_quantities == {"i1": 1}
    assert await _card_refunds(h, order_id) == [6000]
    assert await h.balances() == (2000, 2000)
    assert await h.store.get_stock(h.shop_id, "sku-mug") == 1

    with pytest.raises(CancellationError) as info:
        await h.client.start_cancellation(h.shop_id, order_id, _merchant(("i1", 2)))
    assert info.value.code is ErrorCode.VALIDATION_ERROR and "i1" in info.value.message

    second, _ = await h.client.start_cancellation(h.shop_id, order_id, _merchant(("i2", 1)))
    second = await h.wait_status(second.cancellation_id, CancellationStatus.CANCELED)
    assert second.cancellation_id.endswith("~2")
    assert second.refundable.amount == 7000
    assert await h.order_status(order_id) is OrderStatus.PAID

    last, _ = await h.client.start_cancellation(h.shop_id, order_id, _merchant())
    last = await h.wait_status(last.cancellation_id, CancellationStatus.CANCELED)
    assert last.refundable.amount == 13000  # the last mug and the shipping fee
    assert await h.order_status(order_id) is OrderStatus.CANCELED
    assert sum(await _card_refunds(h, order_id)) == 18000
    assert await h.balances() == (6000, 6000)
    assert await h.store.get_stock(h.shop_id, "sku-mug") == 2
    assert await h.store.get_stock(h.shop_id, "sku-tee") == 1
    with pytest.raises(CancellationError) as info:
        await h.client.start_cancellation(h.shop_id, order_id, _merchant())
    assert info.value.code is ErrorCode.INVALID_TRANSITION


async def test_quote_for_items_changes_nothing(h):
    order_id = await h.order()
    quote = await h.client.quote(
        h.shop_id, order_id, items=[CanceledItem(item_id="i2", quantity=1)]
    )
    assert quote.refundable == 7000
    assert [(line.tender_kind, line.amount) for line in quote.lines] == [(TenderKind.CARD, 7000)]
    assert (await h.store.get_order(h.shop_id, order_id)).canceled_quantities == {}


async def test_undo_of_a_partial_cancellation_restores_exactly_those_items(h):
    await h.store.put_stock(h.shop_id, "sku-mug", 0)
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, _merchant(("i1", 1)))
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert await h.store.get_stock(h.shop_id, "sku-mug") == 1
    undone = await h.client.undo(h.shop_id, order_id, UndoRequest(reason="kept"))
    assert undone.status is CancellationStatus.UNDONE
    assert (await h.store.get_order(h.shop_id, order_id)).canceled_quantities == {}
    assert await h.store.get_stock(h.shop_id, "sku-mug") == 0
    assert await h.order_status(order_id) is OrderStatus.PAID


async def test_partial_cancellation_never_voids_a_whole_authorization(h):
    """Voiding releases the whole authorization; a partial one fails for a person instead."""
    order_id = await h.order(card_behavior={"capture": False})
    start = _merchant(("i1", 1))
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, start)
    failed = await h.wait_for(
        view.cancellation_id, lambda v: v.refunds and v.refunds[0].status == "failed"
    )
    assert "partial_void_unsupported" in failed.refunds[0].failure
    assert failed.needs_attention == "refund_failed"
    order = await h.store.get_order(h.shop_id, order_id)
    ledger = await h.ledger(order.tenders[0].payment_id)
    assert [e["type"] for e in ledger] == ["authorize"]
