"""Change sets: what one cancellation transition does to the store, decided up front.

The workflow decides a transition with pure code and hands the change set to one
activity, which applies it in one database transaction, at most once (the event key
is the idempotency key).

Rule numbers are those of ``docs/rules.md``.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.cancellation import CancellationView, HistoryEntry, RefundLine
from domain.order import OrderStatus


class BalanceKind(StrEnum):
    """A customer balance kept by the store."""

    POINTS = "points"
    CREDITS = "credits"


class Recipient(StrEnum):
    """Who a notification goes to."""

    CUSTOMER = "customer"
    MERCHANT = "merchant"


class StockChange(BaseModel):
    """Stock of one SKU goes up (restock) or down (reserve again)."""

    model_config = ConfigDict(frozen=True)

    sku: str
    delta: int
    key: str


class BalanceChange(BaseModel):
    """A customer's points or credits go up (refund) or down (taken back)."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    balance: BalanceKind
    delta: int
    key: str


class Notification(BaseModel):
    """A message for the mailer (rule 13)."""

    model_config = ConfigDict(frozen=True)

    recipient: Recipient
    template: str
    payload: dict[str, Any] = {}


class ItemChange(BaseModel):
    """The canceled quantity of one order item changes by ``delta``."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    delta: int


class OrderChange(BaseModel):
    """What happens to the order: its status and its canceled quantities."""

    model_config = ConfigDict(frozen=True)

    status: OrderStatus | None = None
    """The new status; ``None`` restores the status before the cancellation."""
    keep_status: bool = False
    """Leave the status alone (a partial cancellation that leaves items)."""
    require_unshipped: bool = False
    """Refuse with ``order_shipped`` if the order shipped meanwhile (rule 1 at acceptance)."""
    canceled_items: list[ItemChange] = []
    """Canceled quantities going up (acceptance) or down (undo)."""


class ChangeSet(BaseModel):
    """Everything one transition writes, applied atomically and at most once."""

    model_config = ConfigDict(frozen=True)

    event_key: str
    event: HistoryEntry
    view: CancellationView
    customer_id: str
    order: OrderChange | None = None
    stock: list[StockChange] = []
    balances: list[BalanceChange] = []
    refund_lines: list[RefundLine] = []
    notifications: list[Notification] = []


class ChangeResult(BaseModel):
    """What applying a change set did."""

    applied_at: datetime
    already_applied: bool
    """The change set had been applied by an earlier attempt (a retry)."""
    order_status: OrderStatus
    """The order's status after the change."""
