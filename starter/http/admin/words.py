"""What the merchant reads: error codes as sentences, and labels in the guide's words.

:data:`ERROR_SENTENCES` is the one table from error code to sentence; a test checks that
every code of :class:`~domain.errors.ErrorCode` has one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from domain.cancellation import (
    Attention,
    CancellationStatus,
    CancellationView,
    InitiatedBy,
    ReasonCode,
    RefundStatus,
)
from domain.errors import ErrorCode
from domain.order import OrderStatus, TenderKind
from domain.refund_plan import RefundChannel, RefundMethod, refund_channel

ERROR_SENTENCES: Final[dict[ErrorCode, str]] = {
    ErrorCode.UNAUTHORIZED: "That token is not valid. Check the shop token and sign in again.",
    ErrorCode.FORBIDDEN: "This page belongs to another shop.",
    ErrorCode.ORDER_NOT_FOUND: "Your shop has no order with this number.",
    ErrorCode.CANCELLATION_NOT_FOUND: "Your shop has no such cancellation.",
    ErrorCode.REFUND_NOT_FOUND: "This cancellation has no such refund.",
    ErrorCode.VALIDATION_ERROR: "Some of what you entered is not valid; check the form.",
    ErrorCode.ORDER_SHIPPED: "This order has shipped: process it as a return.",
    ErrorCode.CUSTOMER_REQUESTS_DISABLED: (
        "Your shop does not take cancellation requests from My Account; the customer should"
        " contact you."
    ),
    ErrorCode.INVALID_TRANSITION: (
        "This can't be done in the cancellation's current state; the page shows what can."
    ),
    ErrorCode.UNDO_WINDOW_CLOSED: (
        "It is too late to undo this cancellation: ask the customer to place a new order."
    ),
    ErrorCode.OUT_OF_STOCK: (
        "The items are no longer in stock, so the cancellation can't be undone."
    ),
    ErrorCode.RECAPTURE_UNAVAILABLE: (
        "The payment provider can't take the canceled payment again. You can still undo if"
        " the customer pays again."
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: (
        "This form was already sent with other values; open the page again and retry."
    ),
    ErrorCode.TEMPORAL_UNAVAILABLE: (
        "The cancellation service is not answering right now; try again in a minute."
    ),
    ErrorCode.DATABASE_UNAVAILABLE: (
        "The store database is not answering right now; try again in a minute."
    ),
    ErrorCode.PROVIDER_UNAVAILABLE: (
        "The payment provider is not answering right now; try again in a minute."
    ),
    ErrorCode.PAYMENT_MISMATCH: (
        "A card payment of this order doesn't belong to your shop's payment account, is in"
        " another currency, or holds less than the order says; check the payment id."
    ),
    ErrorCode.ORDER_LOCKED: (
        "This order already has a cancellation, so its items and payments can't be changed."
    ),
    ErrorCode.WEBHOOK_NOT_FOUND: "Your shop has no webhook endpoint with that id.",
    ErrorCode.DELIVERY_NOT_FOUND: "That webhook endpoint has no delivery with that id.",
    ErrorCode.BULK_CANCELLATION_NOT_FOUND: "Your shop has no bulk cancellation with that id.",
    ErrorCode.INTERNAL_ERROR: (
        "Something went wrong on our side; nothing was changed and we have logged it."
    ),
}
"""Every error code of the API as a sentence a merchant understands."""

FORM_EXPIRED: Final = "This form has expired (or came from another site). Please try again."

STATUS_LABELS: Final[dict[CancellationStatus, str]] = {
    CancellationStatus.REQUESTED: "Cancellation requested",
    CancellationStatus.IN_PROGRESS: "Cancellation in progress",
    CancellationStatus.CANCELED: "Canceled",
    CancellationStatus.REJECTED: "Request rejected",
    CancellationStatus.WITHDRAWN: "Withdrawn by the customer",
    CancellationStatus.UNDOING: "Undoing",
    CancellationStatus.AWAITING_REPAYMENT: "Waiting for the customer to pay again",
    CancellationStatus.UNDONE: "Undone",
}

ORDER_STATUS_LABELS: Final[dict[OrderStatus, str]] = {
    OrderStatus.AWAITING_PAYMENT: "Awaiting payment",
    OrderStatus.PAID: "Paid",
    OrderStatus.PREPARING: "Preparing",
    OrderStatus.READY_TO_SHIP: "Ready to ship",
    OrderStatus.IN_TRANSIT: "In transit",
    OrderStatus.DELIVERED: "Delivered",
    OrderStatus.CANCELLATION_REQUESTED: "Cancellation requested",
    OrderStatus.CANCELLATION_IN_PROGRESS: "Cancellation in progress",
    OrderStatus.CANCELED: "Canceled",
}

REASON_LABELS: Final[dict[ReasonCode, str]] = {
    ReasonCode.CHANGED_MIND: "The customer changed their mind",
    ReasonCode.SHIPPING_DELAY: "Shipping is delayed",
    ReasonCode.SOLD_OUT: "Sold out",
    ReasonCode.DEFECTIVE: "Defective",
    ReasonCode.UNDELIVERABLE_AREA: "The area is not available for shipping",
    ReasonCode.CUSTOMER_CONTACT: "The customer asked by phone or e-mail",
    ReasonCode.OTHER: "Other",
}

MERCHANT_REASONS: Final = (
    ReasonCode.SOLD_OUT,
    ReasonCode.DEFECTIVE,
    ReasonCode.UNDELIVERABLE_AREA,
    ReasonCode.CUSTOMER_CONTACT,
    ReasonCode.SHIPPING_DELAY,
    ReasonCode.OTHER,
)
"""The reasons of a cancellation the merchant starts (Order details › Cancel)."""

METHOD_LABELS: Final[dict[RefundMethod, str]] = {
    RefundMethod.ORIGINAL: "Original payment method",
    RefundMethod.BANK_DEPOSIT: "Bank deposit",
    RefundMethod.CREDITS: "Store credits",
}

CHANNEL_LABELS: Final[dict[RefundChannel, str]] = {
    RefundChannel.PROVIDER: "Refund to the card",
    RefundChannel.BANK_DEPOSIT: "Bank deposit",
    RefundChannel.POINTS: "Points back to the customer",
    RefundChannel.CREDITS: "Store credits",
}
"""How a refund line goes out, which is what the merchant must know (and do)."""


def refund_as(kind: TenderKind, method: RefundMethod) -> str:
    """``Bank deposit`` for a bank transfer refunded the original way, and so on."""
    return CHANNEL_LABELS[refund_channel(kind, method)]


TENDER_LABELS: Final[dict[TenderKind, str]] = {
    TenderKind.CARD: "Card",
    TenderKind.BANK_TRANSFER: "Bank transfer",
    TenderKind.POINTS: "Points",
    TenderKind.CREDITS: "Credits",
}

REFUND_STATUS_LABELS: Final[dict[RefundStatus, str]] = {
    RefundStatus.PENDING: "Pending",
    RefundStatus.PROCESSING: "Processing",
    RefundStatus.AWAITING_CONFIRMATION: "Waiting for your bank deposit",
    RefundStatus.SUCCEEDED: "Refunded",
    RefundStatus.FAILED: "Failed",
    RefundStatus.CANCELED: "Canceled",
}

ATTENTION_LABELS: Final[dict[Attention, str]] = {
    Attention.NONE: "",
    Attention.DECISION_OVERDUE: "Waiting for your decision for too long",
    Attention.REFUND_FAILED: "A refund failed: retry it or switch its method",
    Attention.AWAITING_BANK_DEPOSIT: "Make the bank deposit and confirm it",
    Attention.UNDO_FAILED: "An undo failed and was rolled back; see the history",
}

EVENT_LABELS: Final[dict[str, str]] = {
    "requested": "Cancellation requested",
    "accepted": "Cancellation request accepted",
    "rejected": "Request rejected",
    "withdrawn": "Withdrawn by the customer",
    "canceled": "Canceled",
    "undone": "Undone",
}

NOTICES: Final[dict[str, str]] = {
    "accepted": "The cancellation request was accepted.",
    "rejected": "The cancellation request was rejected.",
    "confirmed": "The bank deposit was confirmed.",
    "retried": "The refund was sent again.",
    "switched": "The refund's method was changed.",
    "undo": "The undo was started.",
    "repaid": "The repayment was confirmed.",
    "started": "The cancellation was started.",
    "exists": "This order already has an open cancellation; here it is.",
    "settings": "The settings were saved.",
    "signed-out": "You have signed out.",
}
"""Messages after a redirect, named by key in the URL (never free text from the URL)."""


def list_label(view: CancellationView) -> str:
    """``Cancellation requested [Customer]``, as the guide marks a customer's request."""
    label = STATUS_LABELS[view.status]
    if view.status is CancellationStatus.REQUESTED:
        who = "Customer" if view.initiated_by is InitiatedBy.CUSTOMER else "Merchant"
        return f"{label} [{who}]"
    return label


def event_label(event: str) -> str:
    """A history event for people: ``refund_failed`` → ``Refund failed``."""
    return EVENT_LABELS.get(event, event.replace("_", " ").capitalize())


def age(since: datetime | None, now: datetime) -> str:
    """How long ago, roughly: ``5 min``, ``3 h``, ``2 days``."""
    if since is None:
        return ""
    delta = max(now - since, timedelta(0))
    if delta < timedelta(minutes=1):
        return "just now"
    if delta < timedelta(hours=1):
        return f"{delta.seconds // 60} min"
    if delta < timedelta(days=1):
        return f"{delta.seconds // 3600} h"
    days = delta.days
    return f"{days} day" if days == 1 else f"{days} days"
