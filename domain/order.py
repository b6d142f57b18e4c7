"""Orders as the store admin knows them: status, items and how they were paid.

Rule numbers are those of ``docs/rules.md``.
"""

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from domain.money import Amount, Currency

Identifier = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
"""Shop, order, item, tender and customer ids: short, printable, safe in a workflow id.

They never hold ``~``, the separator of the ids this product builds from them
(``domain.contract.ID_SEPARATOR``), nor ``/``, ``?``, ``#``, ``%``, spaces or control
characters, so they can't change the meaning of a path or an id they are put in."""

PaymentId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
"""A provider's payment id (a card tender's ``payment_id``): the sandbox's ``pay_…``,
Stripe's ``pi_…``. The same alphabet as :data:`Identifier`, up to 128 characters."""


class OrderStatus(StrEnum):
    """The order's own status; names follow the store admin."""

    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    PREPARING = "preparing"
    READY_TO_SHIP = "ready_to_ship"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    CANCELLATION_REQUESTED = "cancellation_requested"
    CANCELLATION_IN_PROGRESS = "cancellation_in_progress"
    CANCELED = "canceled"


SHIPPED_STATUSES = frozenset({OrderStatus.IN_TRANSIT, OrderStatus.DELIVERED})
"""Past these, a cancellation is a return (rule 1)."""

CANCELLATION_STATUSES = frozenset(
    {
        OrderStatus.CANCELLATION_REQUESTED,
        OrderStatus.CANCELLATION_IN_PROGRESS,
        OrderStatus.CANCELED,
    }
)
"""Statuses that only a cancellation sets."""

FULFILLMENT_STATUSES = frozenset(
    {
        OrderStatus.PREPARING,
        OrderStatus.READY_TO_SHIP,
        OrderStatus.IN_TRANSIT,
        OrderStatus.DELIVERED,
    }
)
"""Statuses a backend service may report through the fulfillment route."""


class TenderKind(StrEnum):
    """How (part of) an order was paid."""

    CARD = "card"
    """Through the payment provider: captured, or only authorized."""
    BANK_TRANSFER = "bank_transfer"
    """Bank deposit or virtual account; money goes back by bank deposit."""
    POINTS = "points"
    """The store's loyalty points of the customer."""
    CREDITS = "credits"
    """The store's credit balance of the customer."""


MONEY_TENDERS = frozenset({TenderKind.CARD, TenderKind.BANK_TRANSFER})
"""Tenders that the merchant's refund method applies to."""


class OrderItem(BaseModel):
    """One line of the order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: Identifier
    sku: Identifier
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    unit_price: Amount


class Tender(BaseModel):
    """One way the order was paid, with the amount it paid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tender_id: Identifier
    kind: TenderKind
    amount: Amount
    payment_id: PaymentId | None = None

    @model_validator(mode="after")
    def _card_has_payment(self) -> Self:
        if self.kind is TenderKind.CARD and self.payment_id is None:
            raise ValueError(f"tender {self.tender_id}: a card tender needs its payment_id")
        if self.kind is not TenderKind.CARD and self.payment_id is not None:
            raise ValueError(f"tender {self.tender_id}: only card tenders have a payment_id")
        return self


class OrderDocument(BaseModel):
    """An order as backend services send it (``PUT …/orders/{order_id}``)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    currency: Currency
    status: OrderStatus = OrderStatus.PAID
    shipping_fee: Amount = 0
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=500)]
    tenders: Annotated[list[Tender], Field(max_length=20)] = []

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.status in CANCELLATION_STATUSES:
            raise ValueError(
                f"status {self.status} is set by cancellations, not by backend services"
            )
        _unique([i.item_id for i in self.items], "item_id")
        _unique([t.tender_id for t in self.tenders], "tender_id")
        if self.status is OrderStatus.AWAITING_PAYMENT:
            if self.tenders:
                raise ValueError("an order awaiting payment has no tenders yet")
        elif sum(t.amount for t in self.tenders) != self.total:
            raise ValueError(
                f"tenders add up to {sum(t.amount for t in self.tenders)}, "
                f"but items plus shipping fee are {self.total}"
            )
        return self

    @property
    def total(self) -> int:
        """Items plus shipping fee, in minor units."""
        return sum(i.quantity * i.unit_price for i in self.items) + self.shipping_fee


class Order(OrderDocument):
    """A stored order, with its ids and what cancellations did to it."""

    shop_id: Identifier
    order_id: Identifier
    status_before_cancellation: OrderStatus | None = None
    canceled_quantities: dict[str, int] = {}
    """Per item, the quantity canceled so far (partial cancellations, rule 10)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A stored order may carry cancellation statuses; the document rules don't apply.
        return self

    @property
    def is_shipped(self) -> bool:
        """Whether the order left the warehouse (rule 1)."""
        return self.status in SHIPPED_STATUSES

    @property
    def is_paid(self) -> bool:
        """Whether any money or balance was taken for the order."""
        return any(t.amount > 0 for t in self.tenders)


def _unique(values: list[str], name: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {name} {value!r}")
        seen.add(value)
