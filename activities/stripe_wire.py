"""Stripe's side of the wire in the port's terms: its refunds and PaymentIntents as the
port's answers, its errors as the port's exceptions, and the request options and params
the ``stripe`` library takes. :mod:`activities.stripe_provider` makes the calls.

Stripe's errors are mapped onto the port's exception tree: rate limits, connection errors,
``409`` (``idempotency_key_in_use``, ``lock_timeout``), 5xx and unreadable answers are
:class:`ProviderUnavailable` (retry with the same key); everything else Stripe refuses is
:class:`ProviderRefused` with Stripe's code, message and request id, and a declined card is
:class:`RefundDeclined`. The API key never appears in a message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import stripe

from activities.provider_client import (
    ProviderRefused,
    ProviderUnavailable,
    RefundDeclined,
)

# Stripe answers these with 409 while another request holds the same key or object: the
# same request succeeds later.
RETRYABLE_CODES = frozenset({"idempotency_key_in_use", "lock_timeout", "rate_limit"})

# Stripe's refund statuses → the port's (``requires_action``: the customer must do
# something before the money moves, so it is pending for us).
REFUND_STATUSES = {
    "pending": "pending",
    "requires_action": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}

PAYMENT_INTENT_STATUSES = frozenset(
    {
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "processing",
        "requires_capture",
        "canceled",
        "succeeded",
    }
)

_SECRET = re.compile(r"\b(sk|rk|pk)_(test|live)_[A-Za-z0-9*]+")


def redact(text: str) -> str:
    """``text`` with anything shaped like a Stripe key replaced (keys never reach a log)."""
    return _SECRET.sub(r"\1_\2_***", text)


def _options(idempotency_key: str | None = None, account: str | None = None) -> Any:
    # The library's RequestOptions is a TypedDict; only the keys that are set are passed.
    options: dict[str, str] = {}
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    if account is not None:
        options["stripe_account"] = account
    return options


def _params(params: dict[str, Any]) -> Any:
    # The library types each call's params as a TypedDict that lags the API (it lacks
    # payment_method_types) and rejects a dict built in steps; Stripe checks them anyway.
    return params


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def provider_error(what: str, err: stripe.StripeError) -> ProviderUnavailable | ProviderRefused:
    """The port's exception for Stripe's error ``err`` while doing ``what``.

    The message keeps Stripe's code, message and request id (for the merchant and the
    operator, who can look the request up in the dashboard), never the API key.
    """
    body = err.json_body if isinstance(err.json_body, dict) else None
    error = body.get("error") if body else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or err.code or error.get("type") or "")
    status = err.http_status
    stripe_message = str(error.get("message") or err.user_message or "").strip()
    request = f" (request {err.request_id})" if err.request_id else ""

    def message(default_code: str) -> str:
        text = f"{what}: Stripe {status or 'gave no status'}: {code or default_code}"
        if stripe_message:
            text += f": {stripe_message}"
        return redact(text + request)

    if isinstance(err, stripe.APIConnectionError):
        return ProviderUnavailable(
            redact(f"{what}: Stripe can't be reached ({type(err).__name__}){request}"),
            code="provider_unavailable",
        )
    if body is None and not isinstance(err, stripe.RateLimitError):
        # Not JSON (a proxy's error page, a cut-off body): nobody knows what happened, and
        # the same request with the same key is safe to send again.
        return ProviderUnavailable(
            redact(f"{what}: Stripe's answer ({status}) is not JSON{request}"),
            code="unreadable_answer",
            status=status,
        )
    if (
        isinstance(err, stripe.RateLimitError)
        or code in RETRYABLE_CODES
        or status in (409, 429)
        or status is None
        or status >= 500
    ):
        return ProviderUnavailable(
            message("provider_unavailable"), code=code or "provider_unavailable", status=status
        )
    if isinstance(err, stripe.CardError):
        return RefundDeclined(message("card_declined"), code=code or "card_declined", status=status)
    if status == 404 or code == "resource_missing":
        # The sandbox's 404: another account's payment is not found in this one.
        return ProviderRefused(message("resource_missing"), code="not_found", status=404)
    if isinstance(err, stripe.AuthenticationError | stripe.PermissionError):
        return ProviderRefused(message("authentication_failed"), code=code or "unauthorized")
    return ProviderRefused(
        message("invalid_request"), code=code or "invalid_request", status=status
    )


def refund_answer(refund: Mapping[str, Any]) -> dict[str, Any]:
    """A Stripe Refund as the port's refund: ``id``, ``payment_id``, ``amount``,
    ``currency`` (upper case), ``status``, ``failure_code``, ``metadata``.

    Raises:
        ProviderRefused: ``unexpected_answer`` for a status the port doesn't know or a
            malformed refund (a person must look; retrying would read the same).
    """
    refund_id, status, amount, currency = _checked(
        "refund", refund, REFUND_STATUSES, "; check the refund in the Stripe dashboard"
    )
    intent = refund.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    metadata = refund.get("metadata") or {}
    return {
        "id": refund_id,
        "payment_id": intent,
        "amount": amount,
        "currency": str(currency).upper(),
        "status": REFUND_STATUSES[status],
        "provider_status": status,
        "failure_code": refund.get("failure_reason") or None,
        "metadata": {str(k): str(v) for k, v in dict(metadata).items()},
    }


def payment_answer(intent: Mapping[str, Any]) -> dict[str, Any]:
    """A Stripe PaymentIntent (with ``latest_charge`` expanded) as the port's payment.

    ``status``: ``requires_capture`` → ``authorized``; ``canceled`` → ``voided``;
    ``succeeded`` → ``captured``, ``partially_refunded`` or ``refunded`` by the charge's
    ``amount_refunded``. A PaymentIntent that took no money yet (``processing``,
    ``requires_*``) is refused as ``payment_not_settled``: a card tender can't name it.
    """
    payment_id, status, amount, currency = _checked("payment", intent, PAYMENT_INTENT_STATUSES)
    charge = intent.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {}
    captured = 0
    refunded = 0
    match status:
        case "requires_capture":
            port_status = "authorized"
        case "canceled":
            port_status = "voided"
        case "succeeded":
            # Stripe reports what was captured as amount_received; a charge without it
            # (localstripe) was captured whole unless the charge says otherwise.
            captured = (
                _int(intent.get("amount_received"))
                or _int(charge.get("amount_captured"))
                or (_int(charge.get("amount")) if charge.get("captured") else 0)
                or amount
            )
            refunded = _int(charge.get("amount_refunded"))
            if refunded <= 0:
                port_status = "captured"
            elif refunded >= captured:
                port_status = "refunded"
            else:
                port_status = "partially_refunded"
        case _:
            raise ProviderRefused(
                f"payment {payment_id} is {status} at Stripe: it took no money yet",
                code="payment_not_settled",
                status=409,
            )
    return {
        "id": payment_id,
        "amount": amount,
        "currency": str(currency).upper(),
        "status": port_status,
        "captured_amount": captured,
        "refunded_amount": refunded,
        "refundable_amount": max(captured - refunded, 0),
        "provider_status": status,
    }


def _checked(
    kind: str, answer: Mapping[str, Any], known: Collection[str], advice: str = ""
) -> tuple[str, Any, int, Any]:
    """A Stripe ``kind``'s (refund, payment) id, status, amount and currency.

    Raises:
        ProviderRefused: ``unexpected_answer`` for a status the port doesn't know
            (``advice`` ends that message) or an answer without its id, amount or currency.
    """
    answer_id = answer.get("id")
    status = answer.get("status")
    if status not in known:
        raise ProviderRefused(
            f"{kind} {answer_id}: Stripe answered status {status!r}, which this adapter"
            f" doesn't know{advice}",
            code="unexpected_answer",
        )
    amount = answer.get("amount")
    currency = answer.get("currency")
    if not isinstance(answer_id, str) or not isinstance(amount, int) or not currency:
        raise ProviderRefused(
            f"{kind} {answer_id}: Stripe's answer lacks its id, amount or currency",
            code="unexpected_answer",
        )
    return answer_id, status, amount, currency
