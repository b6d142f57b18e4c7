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
    PAYMENT_MISMATCH = "payment_mismatch"
    """A card tender names a payment that is not the shop's, in another currency, or short."""
    ORDER_LOCKED = "order_locked"
    """The order has a cancellation: its currency, items and tenders can't be replaced."""
    WEBHOOK_NOT_FOUND = "webhook_not_found"
    """The shop has no webhook endpoint with that id."""
    DELIVERY_NOT_FOUND = "delivery_not_found"
    """The webhook endpoint has no delivery with that id."""
    BULK_CANCELLATION_NOT_FOUND = "bulk_cancellation_not_found"
    """The shop has no bulk cancellation job with that id."""
    INTERNAL_ERROR = "internal_error"
    """A bug or a broken invariant on our side (say, a database constraint); it is logged
    with its trace, and nothing the caller did can fix it."""


class FailureType(StrEnum):
    """Why a step inside a run failed: the ``type`` of an activity's ``ApplicationError``.

    The workflow reacts to these (a refund line fails, a run waits); they reach a caller
    only through an :class:`ErrorCode` (:func:`as_error_code`).
    """

    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """The provider did not answer usefully; the activity retries with the same key."""
    PROVIDER_REFUSED = "provider_refused"
    """The provider refused the request for good (a 4xx other than a decline)."""
    REFUND_DECLINED = "refund_declined"
    """The card network declined the refund."""
    REFUND_PENDING = "refund_pending"
    """The refund is still pending: the settlement poll tries again later."""
    REFUND_FAILED = "refund_failed"
    """The provider's webhook reported the refund failed."""
    RECAPTURE_REFUSED = "recapture_refused"
    """The provider refused to take a canceled payment back after its check allowed it."""
    PARTIAL_VOID_UNSUPPORTED = "partial_void_unsupported"
    """Part of an authorization can't be released at this provider."""
    PAYMENT_MISMATCH = "payment_mismatch"
    """The provider answered for another currency or amount than asked."""
    PROVIDER_ERROR = "provider_error"
    """Anything else around a provider call (an unreadable answer, a bug): fails for good."""
    STORE_CONSTRAINT = "store_constraint"
    """The store refused a write on a constraint we rely on: a bug or bad data."""
    STORE_FAILED = "store_failed"
    """A store step failed without saying why (the database was away too long)."""


def as_error_code(failure_type: str | None) -> ErrorCode:
    """The caller's code for a run's failure type: its own code when it is one, a database
    outage as ``database_unavailable``, a provider outage as ``provider_unavailable``, and
    anything else as ``internal_error`` (never a made-up ``invalid_transition``)."""
    if failure_type is not None and failure_type in ErrorCode.__members__.values():
        return ErrorCode(failure_type)
    if failure_type == FailureType.STORE_FAILED:
        return ErrorCode.DATABASE_UNAVAILABLE
    return ErrorCode.INTERNAL_ERROR


class CancellationError(Exception):
    """A refusal with a typed code and a message a person can act on."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
