"""Bulk cancellation's pure rules: what a job cancels in an order, its ids, its refusals."""

import pytest

from domain.bulk import (
    BulkCounts,
    BulkOutcome,
    BulkRequest,
    bulk_workflow_id,
    check_bulk_request,
    items_to_cancel,
)
from domain.errors import CancellationError, ErrorCode
from domain.order import Order, OrderItem, OrderStatus
from domain.refund_plan import RefundMethod
from tests.domain.orders import an_order


def _order(items: list[tuple[str, int]], canceled: dict[str, int] | None = None) -> Order:
    return an_order(
        [
            OrderItem(item_id=f"i{n}", sku=sku, quantity=q, unit_price=1000)
            for n, (sku, q) in enumerate(items, start=1)
        ],
        [],
        order_id="o1",
        status=OrderStatus.PAID,
        shipping_fee=3000,
        canceled_quantities=canceled or {},
    )


def test_an_order_holding_only_the_sku_is_canceled_whole() -> None:
    """Whole (``None``): the shipping fee goes back with the last items."""
    assert items_to_cancel(_order([("mug", 2), ("mug", 1)]), "mug") is None


def test_the_sku_among_other_items_is_canceled_alone_with_what_remains_of_it() -> None:
    order = _order([("mug", 3), ("tee", 1), ("mug", 1)], canceled={"i1": 1})
    assert [(i.item_id, i.quantity) for i in items_to_cancel(order, "mug") or []] == [
        ("i1", 2),
        ("i3", 1),
    ]


def test_the_other_items_canceled_before_make_the_sku_the_whole_rest() -> None:
    assert items_to_cancel(_order([("mug", 1), ("tee", 1)], canceled={"i2": 1}), "mug") is None


def test_nothing_of_the_sku_left_is_an_invalid_transition() -> None:
    with pytest.raises(CancellationError) as refused:
        items_to_cancel(_order([("mug", 1), ("tee", 1)], canceled={"i1": 1}), "mug")
    assert refused.value.code is ErrorCode.INVALID_TRANSITION


def test_workflow_ids_never_collide_across_shops() -> None:
    """``-`` is in the id alphabet, ``~`` is not: ``acc`` + ``a-1`` ≠ ``acc-a`` + ``1``."""
    assert bulk_workflow_id("acc", "a-1") != bulk_workflow_id("acc-a", "1")
    assert bulk_workflow_id("shop", "b1") == "bulk~shop~b1"


def test_a_bank_deposit_cannot_be_done_in_bulk() -> None:
    check_bulk_request(BulkRequest(sku="mug", refund_method=RefundMethod.CREDITS))
    with pytest.raises(CancellationError) as refused:
        check_bulk_request(BulkRequest(sku="mug", refund_method=RefundMethod.BANK_DEPOSIT))
    assert refused.value.code is ErrorCode.VALIDATION_ERROR


def test_counts_add_up() -> None:
    counts = BulkCounts.of({BulkOutcome.STARTED: 3, BulkOutcome.REFUSED: 1})
    assert counts.model_dump() == {"matched": 4, "started": 3, "already_open": 0, "refused": 1}
