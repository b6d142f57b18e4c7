"""Error codes shared by the workflow, the client, the CLI and the HTTP hook.

Tree::

    CancellationError(code, message)   any refusal; ``code`` is one ErrorCode

Each edge translates it once: the workflow into ``ApplicationError(type=code)``,
the client back into ``CancellationError``, the HTTP hook into a status code.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why an action was refused. Values are public (API, CLI, Temporal failure types)."""

    UNAUTHORIZED = "unauthorized"
    """No token, or a token we don't know."""
    FORBIDDEN = "forbidden"
    """A shop's token used on another shop's path."""
    ORDER_NOT_FOUND = "order_not_found"
    """The shop has no such order."""
    CANCELLATION_NOT_FOUND = "cancellation_not_found"
    """The order has no cancellation (or not the one named)."""
    REFUND_NOT_FOUND = "refund_not_found"
    """The cancellation has no refund line with that id."""
    VALIDATION_ERROR = "validation_error"
    """The input is malformed or inconsistent."""
    ORDER_SHIPPED = "order_shipped"
    """The order is in transit or delivered: process it as a return."""
    CUSTOMER_REQUESTS_DISABLED = "customer_requests_disabled"
    """The shop does not take cancellation requests from My Account."""
    INVALID_TRANSITION = "invalid_transition"
    """The action is not allowed in the cancellation's current state."""
    UNDO_WINDOW_CLOSED = "undo_window_closed"
    """The undo window has passed; the customer should order again."""
    OUT_OF_STOCK = "out_of_stock"
    """Stock for the items is gone, so the cancellation can't be undone."""
    RECAPTURE_UNAVAILABLE = "recapture_unavailable"
    """The provider can't recapture a canceled payment."""
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    """The same idempotency key came with a different request."""
    TEMPORAL_UNAVAILABLE = "temporal_unavailable"
    """The workflow service does not answer."""
    DATABASE_UNAVAILABLE = "database_unavailable"
    """The store database does not answer."""
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """The payment provider does not answer."""
    BULK_CANCELLATION_NOT_FOUND = "bulk_cancellation_not_found"
    """The shop has no bulk cancellation job with that id."""


class CancellationError(Exception):
    """A refusal with a typed code and a message a person can act on."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
