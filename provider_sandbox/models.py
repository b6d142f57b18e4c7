"""Request bodies the sandbox accepts, validated strictly at the edge.

Strict mode is the point: a float, a boolean or a numeric string is never silently
turned into money. Unknown fields are refused so a client typo (`"ammount"`) fails
loudly instead of being ignored.
"""

from enum import StrEnum
from typing import Annotated, Any, TypeVar

import pydantic

from provider_sandbox.errors import ApiError, ErrorCode

MAX_AMOUNT = 10**15
"""Largest amount in minor units; anything above is a client bug, not a payment."""

MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
"""Ten years: long enough for any test, short enough to stay clear of datetime overflow."""

MAX_HANG_SECONDS = 3600
"""An injected hang longer than an hour would only hold connections open."""

Amount = Annotated[int, pydantic.Field(gt=0, le=MAX_AMOUNT)]
Currency = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Z]{3}$")]
Seconds = Annotated[float, pydantic.Field(ge=0, le=MAX_DURATION_SECONDS)]
Rate = Annotated[float, pydantic.Field(ge=0, le=1)]

# Strict mode would demand enum instances; JSON can only carry their string values.
_FromValue = pydantic.Strict(False)


MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
Metadata = Annotated[
    dict[
        Annotated[
            str, pydantic.StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_LENGTH)
        ],
        Annotated[str, pydantic.StringConstraints(max_length=MAX_METADATA_VALUE_LENGTH)],
    ],
    pydantic.Field(max_length=MAX_METADATA_KEYS),
]
"""The caller's own data on a refund (Stripe's `metadata`): at most 20 string keys of 1-40
characters, each with a string value of at most 500."""


class RefundBehavior(StrEnum):
    """How the simulated card network answers refunds of a payment."""

    SUCCEED = "succeed"
    DECLINE = "decline"
    PENDING = "pending"
    """Pending for `settle_after_seconds` (any length, days included), then succeeded."""
    PENDING_THEN_FAIL = "pending_then_fail"
    """Pending for `settle_after_seconds`, then failed: nothing moved, `refund.failed`."""
    FAIL_AFTER_SUCCESS = "fail_after_success"
    """Succeeded (money back to the customer), then failed `fail_after_seconds` later:
    the money returns to the merchant (`refund_reversal`), `refund.failed`."""


class RecaptureOutcome(StrEnum):
    """What the recapture check answers."""

    RESTORABLE = "restorable"
    """The money can be taken back from the customer without asking them."""
    REAUTH_REQUIRED = "reauth_required"
    """The customer has to authorize a new payment."""
    NOT_POSSIBLE = "not_possible"
    """Nothing can be taken back."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)


class Behavior(_Strict):
    """Test-only knobs fixed when a payment is created."""

    refund: Annotated[RefundBehavior, _FromValue] = RefundBehavior.SUCCEED
    settle_after_seconds: Seconds = 5.0
    fail_after_seconds: Seconds = 5.0
    recapture: Annotated[RecaptureOutcome, _FromValue] = RecaptureOutcome.RESTORABLE
    recapture_window_seconds: Seconds = 86400.0


class CreatePaymentRequest(_Strict):
    """Body of `POST /v1/payments`."""

    amount: Amount
    currency: Currency
    capture: bool = True
    behavior: Behavior = Behavior()


class RefundRequest(_Strict):
    """Body of `POST /v1/payments/{id}/refunds`."""

    amount: Amount
    metadata: Metadata | None = None


class VoidRequest(_Strict):
    """Body of `POST /v1/payments/{id}/void`: empty, as a void releases the whole authorization."""


class RecaptureRequest(_Strict):
    """Body of `POST /v1/payments/{id}/recapture`."""

    amount: Amount


class AdvanceClockRequest(_Strict):
    """Body of `POST /v1/clock/advance`: move provider time forward (never back)."""

    seconds: Seconds


class FaultsConfig(_Strict):
    """Body of `PUT /v1/faults`: the share of faulted POSTs, each rolled independently.

    `hang_rate` hangs `hang_seconds` and answers 503 with no effect; `slow_rate` hangs as
    long and then applies the effect; while either holds a request, its idempotency key is
    in use (`409 idempotency_key_in_use` for a retry).
    """

    error_rate: Rate = 0.0
    hang_rate: Rate = 0.0
    error_after_effect_rate: Rate = 0.0
    slow_rate: Rate = 0.0
    """Share of POSTs that wait `hang_seconds`, then apply their effect and answer as usual."""
    hang_seconds: Annotated[float, pydantic.Field(ge=0, le=MAX_HANG_SECONDS)] = 30.0


ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def parse_body(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """Validate a decoded JSON object against a request model.

    Raises:
        ApiError: 422 `validation_error` naming every offending field.
    """
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as error:
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, _describe(error)) from None


def _describe(error: pydantic.ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in detail["loc"]) or "body"
        problems.append(f"{where}: {detail['msg']}")
    return "; ".join(problems)
