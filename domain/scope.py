"""What a cancellation covers: whole order or some items and quantities (rule 10).

Rule numbers are those of ``docs/rules.md``.
"""

from pydantic import BaseModel, ConfigDict

from domain.cancellation import CanceledItem
from domain.errors import CancellationError, ErrorCode
from domain.money import Money
from domain.order import Order


class CancellationScope(BaseModel):
    """The items a cancellation takes back and the amount they are worth."""

    model_config = ConfigDict(frozen=True)

    items: list[CanceledItem]
    """The quantities canceled, per item (never empty)."""
    amount: int
    """The items' price, plus the shipping fee when these are the last items."""
    is_last: bool
    """Nothing of the order stays uncanceled afterwards: the order becomes canceled."""


def remaining_quantities(order: Order) -> dict[str, int]:
    """Per item, the quantity not canceled yet."""
    return {
        item.item_id: item.quantity - order.canceled_quantities.get(item.item_id, 0)
        for item in order.items
    }


def scope_of(order: Order, items: list[CanceledItem] | None) -> CancellationScope:
    """Resolve a request's items (``None``: everything left) against the order.

    Raises:
        CancellationError: ``validation_error`` naming the item for an unknown item or a
            quantity beyond what remains; ``invalid_transition`` when nothing is left.
    """
    remaining = remaining_quantities(order)
    if items is None:
        wanted = {item_id: left for item_id, left in remaining.items() if left > 0}
    else:
        wanted = {}
        for item in items:
            if item.item_id not in remaining:
                raise CancellationError(
                    ErrorCode.VALIDATION_ERROR,
                    f"item {item.item_id} is not part of order {order.order_id}",
                )
            wanted[item.item_id] = wanted.get(item.item_id, 0) + item.quantity
        for item_id, quantity in wanted.items():
            if quantity > remaining[item_id]:
                raise CancellationError(
                    ErrorCode.VALIDATION_ERROR,
                    f"item {item_id}: {quantity} to cancel but only {remaining[item_id]}"
                    " left uncanceled",
                )
    if not wanted:
        raise CancellationError(
            ErrorCode.INVALID_TRANSITION,
            f"order {order.order_id} has nothing left to cancel",
        )
    is_last = all(remaining[item_id] == wanted.get(item_id, 0) for item_id in remaining)
    prices = {item.item_id: item.unit_price for item in order.items}
    amount = sum(prices[item_id] * quantity for item_id, quantity in wanted.items())
    if is_last:
        amount += order.shipping_fee
    ordered = [
        CanceledItem(item_id=item.item_id, quantity=wanted[item.item_id])
        for item in order.items
        if item.item_id in wanted
    ]
    return CancellationScope(items=ordered, amount=amount, is_last=is_last)


def refundable_amount(
    order: Order, scope: CancellationScope, refunded_by_tender: dict[str, int]
) -> int:
    """What the scope refunds: its amount, bounded by what the tenders can still give back
    (an unpaid order refunds nothing)."""
    capacity = sum(t.amount - refunded_by_tender.get(t.tender_id, 0) for t in order.tenders)
    return min(scope.amount, capacity)


def refundable_before_acceptance(
    order: Order, items: list[CanceledItem] | None, refunded_by_tender: dict[str, int]
) -> Money | None:
    """What accepting would refund, in the order's currency: the view's ``refundable``
    from the opening on. ``None`` when the items don't fit the order (opening refuses them)."""
    try:
        scope = scope_of(order, items)
    except CancellationError:
        return None
    amount = refundable_amount(order, scope, refunded_by_tender)
    return Money(amount=amount, currency=order.currency)
