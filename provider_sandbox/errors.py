"""Errors the sandbox answers with, and the one shape they all take.

Every error body is `{"error": {"code": <ErrorCode>, "message": <text>}}`, sometimes with
extra top-level keys (a declined refund adds `"refund"`).

ApiError
├── 400 idempotency_key_required
├── 402 refund_declined            (stored and replayed like a success)
├── 404 payment_not_found, refund_not_found, not_found
├── 405 method_not_allowed
├── 409 business rejections        (stored and replayed like a success)
├── 409 idempotency_key_reused     (never stored)
├── 409 idempotency_key_in_use     (never stored; retry later with the same key)
├── 422 validation_error
└── 503 service_unavailable        (injected fault)
"""

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Machine-readable error codes; clients branch on these, never on messages."""

    VALIDATION_ERROR = "validation_error"
    """The body is not JSON, not an object, or a field is missing, mistyped or out of range."""
    IDEMPOTENCY_KEY_REQUIRED = "idempotency_key_required"
    """A refund, void or recapture came without an `Idempotency-Key` header."""
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    """The key was already used on this route and payment with a different body."""
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    """Another request with this key is still being processed; retry later with the same key."""
    NOT_FOUND = "not_found"
    """No such route."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """The route exists but not for this HTTP method."""
    PAYMENT_NOT_FOUND = "payment_not_found"
    """No payment has this id."""
    REFUND_NOT_FOUND = "refund_not_found"
    """No refund has this id."""
    PAYMENT_NOT_CAPTURED = "payment_not_captured"
    """A refund was asked for a payment that is only authorized."""
    PAYMENT_VOIDED = "payment_voided"
    """The payment's authorization was voided, so it cannot be refunded or voided again."""
    PAYMENT_ALREADY_CAPTURED = "payment_already_captured"
    """A void was asked for a captured payment; refund it instead."""
    AMOUNT_EXCEEDS_REFUNDABLE = "amount_exceeds_refundable"
    """The refund is larger than captured minus refunded minus pending refunds."""
    REFUND_DECLINED = "refund_declined"
    """The card network declined the refund; nothing moved."""
    RECAPTURE_UNAVAILABLE = "recapture_unavailable"
    """The recapture check does not answer `restorable` for this payment."""
    AMOUNT_EXCEEDS_RECAPTURABLE = "amount_exceeds_recapturable"
    """The recapture is larger than what was refunded or voided and not yet recaptured."""
    SERVICE_UNAVAILABLE = "service_unavailable"
    """An injected fault (see `PUT /v1/faults`)."""
    INTERNAL_ERROR = "internal_error"
    """A bug in the sandbox."""


def error_body(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    """Build the JSON body of an error answer."""
    return {"error": {"code": code.value, "message": message}, **extra}


class ApiError(Exception):
    """An answer other than success, raised anywhere below the route handlers.

    Args:
        status_code: The HTTP status to answer with.
        code: The machine-readable error code.
        message: A sentence for people; never contains secrets.
    """

    def __init__(self, status_code: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return error_body(self.code, self.message)

    @property
    def is_outcome(self) -> bool:
        """Whether this error is the payment's answer to a valid request.

        Such answers (402 and 409 rejections) are stored under the idempotency key
        and replayed, exactly like a success; bad requests (400, 404, 422) are not,
        because nothing about the payment was decided.
        """
        return self.status_code in (402, 409) and self.code not in _NOT_OUTCOMES


_NOT_OUTCOMES = frozenset({ErrorCode.IDEMPOTENCY_KEY_REUSED, ErrorCode.IDEMPOTENCY_KEY_IN_USE})
"""409s about the key, not the payment: nothing was decided, so nothing is stored."""
