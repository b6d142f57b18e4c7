"""Partial cancellations (rule 10) as pure functions: random orders, random sequences."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.cancellation import CanceledItem
from domain.errors import CancellationError, ErrorCode
from domain.order import Order, OrderItem, OrderStatus, Tender, TenderKind
from domain.refund_plan import RefundMethod, plan_refund
from domain.scope import refundable_amount, scope_of
from tests.domain.orders import an_order


@st.composite
def paid_orders(draw: st.DrawFn) -> Order:
    items = [
        OrderItem(
            item_id=f"i{n}",
            sku=f"sku{n}",
            quantity=draw(st.integers(1, 4)),
            unit_price=draw(st.integers(0, 50_000)),
        )
        for n in range(draw(st.integers(1, 4)))
    ]
    shipping = draw(st.integers(0, 5000))
    total = sum(i.quantity * i.unit_price for i in items) + shipping
    kinds = draw(st.lists(st.sampled_from(list(TenderKind)), min_size=1, max_size=3))
    cuts = sorted(
        draw(st.lists(st.integers(0, total), min_size=len(kinds) - 1, max_size=len(kinds) - 1))
    )
    amounts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    tenders = [
        Tender(
            tender_id=f"t{n}",
            kind=kind,
            amount=amount,
            payment_id=f"p{n}" if kind is TenderKind.CARD else None,
        )
        for n, (kind, amount) in enumerate(zip(kinds, amounts, strict=True))
    ]
    return an_order(items, tenders, status=OrderStatus.PAID, shipping_fee=shipping)


@given(paid_orders(), st.data())
def test_successive_partial_cancellations_add_up_to_the_whole_order(order, data):
    """Exact sums per step, no tender beyond what it paid, shipping once and only last."""
    refunded: dict[str, int] = {}
    canceled: dict[str, int] = {}
    total_refunded = 0
    while True:
        current = order.model_copy(update={"canceled_quantities": dict(canceled)})
        left = {i.item_id: i.quantity - canceled.get(i.item_id, 0) for i in order.items}
        if not any(left.values()):
            break
        items = [
            CanceledItem(item_id=item_id, quantity=data.draw(st.integers(1, q), label=item_id))
            for item_id, q in left.items()
            if q and data.draw(st.booleans(), label=f"take {item_id}")
        ] or [next(CanceledItem(item_id=i, quantity=q) for i, q in left.items() if q)]
        scope = scope_of(current, items)
        amount = refundable_amount(current, scope, refunded)
        plan = plan_refund(
            current, RefundMethod.ORIGINAL, amount=amount, refunded_by_tender=refunded
        )
        assert sum(line.amount for line in plan.lines) == amount
        prices = {i.item_id: i.unit_price for i in order.items}
        items_price = sum(prices[i.item_id] * i.quantity for i in scope.items)
        assert amount == items_price + (order.shipping_fee if scope.is_last else 0)
        for line in plan.lines:
            refunded[line.tender_id] = refunded.get(line.tender_id, 0) + line.amount
        for item in scope.items:
            canceled[item.item_id] = canceled.get(item.item_id, 0) + item.quantity
        total_refunded += amount
        paid = {t.tender_id: t.amount for t in order.tenders}
        assert all(refunded[t] <= paid[t] for t in refunded)
    assert total_refunded == sum(t.amount for t in order.tenders)
    assert refunded == {t.tender_id: t.amount for t in order.tenders if t.amount}


def _order() -> Order:
    return an_order(
        [
            OrderItem(item_id="i1", sku="mug", quantity=2, unit_price=10_000),
            OrderItem(item_id="i2", sku="tee", quantity=1, unit_price=7_000),
        ],
        [Tender(tender_id="t", kind=TenderKind.CARD, amount=30_000, payment_id="p")],
        shipping_fee=3000,
    )


def test_quantity_beyond_what_remains_names_the_item():
    order = _order().model_copy(update={"canceled_quantities": {"i1": 1}})
    with pytest.raises(CancellationError) as info:
        scope_of(order, [CanceledItem(item_id="i1", quantity=2)])
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    assert "i1" in info.value.message and "only 1 left" in info.value.message


def test_unknown_item_is_refused():
    with pytest.raises(CancellationError, match="i9"):
        scope_of(_order(), [CanceledItem(item_id="i9", quantity=1)])


def test_nothing_left_is_an_invalid_transition():
    order = _order().model_copy(update={"canceled_quantities": {"i1": 2, "i2": 1}})
    with pytest.raises(CancellationError) as info:
        scope_of(order, None)
    assert info.value.code is ErrorCode.INVALID_TRANSITION


def test_shipping_goes_with_the_last_items_only():
    first = scope_of(_order(), [CanceledItem(item_id="i1", quantity=2)])
    assert (first.amount, first.is_last) == (20_000, False)
    rest = scope_of(_order().model_copy(update={"canceled_quantities": {"i1": 2}}), None)
    assert (rest.amount, rest.is_last) == (10_000, True)
