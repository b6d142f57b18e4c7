"""Refund planning: exact sums, no tender over-refunded, the right method per tender."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.order import Order, OrderItem, OrderStatus, Tender, TenderKind
from domain.refund_plan import RefundChannel, RefundMethod, apportion, plan_refund
from tests.domain.orders import an_order

KINDS = list(TenderKind)


@st.composite
def orders(draw: st.DrawFn) -> Order:
    """Random orders: 1–5 items, a shipping fee, 0–4 tenders that add up to the total."""
    items = [
        OrderItem(
            item_id=f"i{n}",
            sku=f"sku{n}",
            quantity=draw(st.integers(1, 5)),
            unit_price=draw(st.integers(0, 200_000)),
        )
        for n in range(draw(st.integers(1, 5)))
    ]
    shipping = draw(st.integers(0, 5000))
    total = sum(i.quantity * i.unit_price for i in items) + shipping
    count = draw(st.integers(1, 4)) if total else draw(st.integers(0, 1))
    amounts: list[int] = []
    if count:
        size = count - 1
        cuts = sorted(draw(st.lists(st.integers(0, total), min_size=size, max_size=size)))
        amounts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    tenders = []
    for n, amount in enumerate(amounts):
        kind = draw(st.sampled_from(KINDS))
        tenders.append(
            Tender(
                tender_id=f"t{n}",
                kind=kind,
                amount=amount,
                payment_id=f"pay_{n}" if kind is TenderKind.CARD else None,
            )
        )
    return an_order(items, tenders, status=OrderStatus.PAID, shipping_fee=shipping)


@given(orders(), st.sampled_from(list(RefundMethod)))
def test_whole_order_plan_refunds_exactly_what_each_tender_paid(order, method):
    plan = plan_refund(order, method)
    assert plan.refundable == sum(t.amount for t in order.tenders)
    assert sum(line.amount for line in plan.lines) == plan.refundable
    paid = {t.tender_id: t.amount for t in order.tenders}
    for line in plan.lines:
        assert 0 < line.amount == paid[line.tender_id]


@given(orders(), st.data())
def test_partial_amounts_add_up_and_never_exceed_a_tender(order, data):
    """Spreading any amount, after earlier refunds, stays exact and within each tender."""
    refunded = {
        t.tender_id: data.draw(st.integers(0, t.amount), label=t.tender_id) for t in order.tenders
    }
    remaining = {t.tender_id: t.amount - refunded[t.tender_id] for t in order.tenders}
    amount = data.draw(st.integers(0, sum(remaining.values())), label="amount")
    plan = plan_refund(order, RefundMethod.ORIGINAL, amount=amount, refunded_by_tender=refunded)
    assert sum(line.amount for line in plan.lines) == amount
    for line in plan.lines:
        assert line.amount <= remaining[line.tender_id]


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=8))
def test_apportion_is_exact_and_bounded(total, weights):
    if total > sum(weights):
        total = sum(weights)
    parts = apportion(total, weights)
    assert sum(parts) == total
    assert all(0 <= p <= w for p, w in zip(parts, weights, strict=True))


def test_apportion_rounds_by_largest_remainder():
    assert apportion(100, [1, 1, 1]) == [34, 33, 33]
    assert apportion(10, [5, 3, 2]) == [5, 3, 2]
    assert apportion(7, [2, 2]) == [4, 3]


def test_refund_beyond_what_is_left_is_refused():
    order = an_order(
        [OrderItem(item_id="i", sku="k", quantity=1, unit_price=100)],
        [Tender(tender_id="t", kind=TenderKind.CARD, amount=100, payment_id="p")],
    )
    with pytest.raises(ValueError, match="exceeds"):
        plan_refund(order, RefundMethod.ORIGINAL, amount=60, refunded_by_tender={"t": 50})


@pytest.mark.parametrize(
    ("kind", "method", "channel"),
    [
        (TenderKind.CARD, RefundMethod.ORIGINAL, RefundChannel.PROVIDER),
        (TenderKind.CARD, RefundMethod.BANK_DEPOSIT, RefundChannel.BANK_DEPOSIT),
        (TenderKind.CARD, RefundMethod.CREDITS, RefundChannel.CREDITS),
        (TenderKind.BANK_TRANSFER, RefundMethod.ORIGINAL, RefundChannel.BANK_DEPOSIT),
        (TenderKind.BANK_TRANSFER, RefundMethod.CREDITS, RefundChannel.CREDITS),
        (TenderKind.POINTS, RefundMethod.BANK_DEPOSIT, RefundChannel.POINTS),
        (TenderKind.POINTS, RefundMethod.CREDITS, RefundChannel.POINTS),
        (TenderKind.CREDITS, RefundMethod.ORIGINAL, RefundChannel.CREDITS),
    ],
)
def test_each_tender_goes_back_the_way_the_method_says(kind, method, channel):
    order = an_order(
        [OrderItem(item_id="i", sku="k", quantity=1, unit_price=100)],
        [
            Tender(
                tender_id="t",
                kind=kind,
                amount=100,
                payment_id="p" if kind is TenderKind.CARD else None,
            )
        ],
    )
    (line,) = plan_refund(order, method).lines
    assert line.channel is channel
    expected_method = method if kind in (TenderKind.CARD, TenderKind.BANK_TRANSFER) else "original"
    assert line.method == expected_method
