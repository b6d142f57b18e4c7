"""Stripe's signed webhooks (``PAYMENT_PROVIDER=stripe``), turned into workflow signals.

``refund.updated``, ``refund.failed`` and ``charge.refund.updated`` carry a Refund. Once its
status is final (``succeeded``; ``failed`` or ``canceled``), the cancellations waiting on
its PaymentIntent get ``provider_refund_settled`` with the refund id and
``succeeded``/``failed``, as the sandbox's webhooks do (:mod:`starter.http.webhooks`). A
refund still ``pending`` or ``requires_action`` and every other event type answer
``200 {"ignored": true}`` so Stripe stops sending them.

``Stripe-Signature`` is verified with the official library over the raw body and
``STRIPE_WEBHOOK_SECRET``, refusing a timestamp more than 5 minutes off (``401``). Stripe
delivers at least once, late and out of order: an event id the hook acted on before is
answered ``ignored`` (migration ``008``), and the workflow ignores a settlement it knows.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import stripe
from fastapi import APIRouter, Depends, Header, Request
from temporalio.service import RPCError, RPCStatusCode

from activities.provider import ProviderRefundSettled
from activities.stripe_events import StripeEventLog
from domain.cancellation import CancellationStatus
from domain.errors import CancellationError, ErrorCode
from starter.http.context import Hook, hook
from starter.http.errors import error_responses
from starter.http.models import WebhookAnswer
from workflows.order_cancellation import OrderCancellationWorkflow

log = logging.getLogger("starter.http")

SIGNATURE_HEADER = "Stripe-Signature"
PATH = "/v1/provider/stripe/webhooks"

REFUND_EVENTS = frozenset({"refund.updated", "refund.failed", "charge.refund.updated"})
"""The events whose object is a Refund; the rest are ignored."""

# Stripe's final refund statuses → the signal's status. pending and requires_action
# aren't final: the worker's poll (or a later event) sees how they end.
SETTLED = {"succeeded": "succeeded", "failed": "failed", "canceled": "failed"}

# Stripe's own default: a signature over a timestamp further off than this is refused.
SIGNATURE_TOLERANCE_SECONDS = 300

router = APIRouter()


def verified_event(body: bytes, signature: str | None, secret: str | None) -> dict[str, Any]:
    """The event in ``body`` once ``signature`` proves Stripe sent it, as a plain dict.

    Raises:
        CancellationError: ``unauthorized`` (no secret configured, no or a wrong
            signature, a stale timestamp), ``validation_error`` (not a JSON event).
    """
    if not secret:
        raise CancellationError(
            ErrorCode.UNAUTHORIZED,
            "Stripe webhooks are not accepted: STRIPE_WEBHOOK_SECRET is unset",
        )
    if not signature:
        raise CancellationError(ErrorCode.UNAUTHORIZED, f"the {SIGNATURE_HEADER} header is missing")
    try:
        event = stripe.Webhook.construct_event(
            body, signature, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError:
        raise CancellationError(
            ErrorCode.UNAUTHORIZED,
            f"the {SIGNATURE_HEADER} does not match, or its timestamp is more than 5 minutes off",
        ) from None
    except ValueError:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, "the body is not a Stripe event"
        ) from None
    answer: dict[str, Any] = event.to_dict()
    return answer


@router.post(
    PATH,
    responses=error_responses(401, 422, 503),
    tags=["provider"],
    summary="Stripe's signed webhooks (no bearer token)",
)
async def stripe_webhook(
    request: Request,
    hook: Annotated[Hook, Depends(hook)],
    stripe_signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            max_length=1024,
            description="t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>",
        ),
    ] = None,
) -> WebhookAnswer:
    """Signal the cancellations waiting for a refund Stripe settled; ignore everything else."""
    event = verified_event(
        await request.body(), stripe_signature, hook.settings.stripe_webhook_secret
    )
    event_id = str(event.get("id") or "")
    event_type = str(event.get("type") or "")
    account = event.get("account") or None
    refund = (event.get("data") or {}).get("object") or {}
    if not event_id or event_type not in REFUND_EVENTS or refund.get("object") != "refund":
        log.info("stripe event %s (%s) ignored: not about a refund", event_id, event_type)
        return WebhookAnswer(ignored=True)
    status = SETTLED.get(str(refund.get("status")))
    payment_id = refund.get("payment_intent")
    if status is None or not isinstance(payment_id, str) or not isinstance(refund.get("id"), str):
        log.info(
            "stripe event %s ignored: refund %s is %s",
            event_id,
            refund.get("id"),
            refund.get("status"),
        )
        return WebhookAnswer(ignored=True)
    # The pool behind the hook's own store; the event log shares it.
    events = StripeEventLog(hook.admin_store._pool)
    if await events.seen(event_id):
        log.info("stripe event %s ignored: already acted on", event_id)
        return WebhookAnswer(ignored=True)
    signaled = await _signal_waiting(
        hook,
        payment_id,
        account,
        ProviderRefundSettled(provider_reference=refund["id"], status=status),
        event_id,
    )
    # Recorded after the signals went out: had one failed (503), Stripe's redelivery
    # must act again. A redelivery racing this one signals twice, which runs ignore.
    await events.record(event_id, event_type, account)
    return WebhookAnswer(ignored=signaled == 0)


async def _signal_waiting(
    hook: Hook,
    payment_id: str,
    account: str | None,
    settled: ProviderRefundSettled,
    event_id: str,
) -> int:
    """Signal each run waiting on ``payment_id`` in ``account``; how many were signaled."""
    signaled = 0
    accounts = hook.client.provider_accounts
    statuses = [CancellationStatus.IN_PROGRESS, CancellationStatus.UNDOING]
    if settled.status == "failed":
        statuses.append(CancellationStatus.CANCELED)  # a refund may fail after completion
    waiting = await hook.admin_store.refund_cancellations(
        payment_id, settled.provider_reference, statuses
    )
    for cancellation in waiting:
        if accounts.get(cancellation.shop_id) != account:
            # A PaymentIntent id is only unique within its account: another account's
            # event must not touch this shop's run.
            continue
        handle = hook.client.temporal.get_workflow_handle_for(
            OrderCancellationWorkflow.run, cancellation.cancellation_id, run_id=cancellation.run_id
        )
        try:
            await handle.signal(OrderCancellationWorkflow.provider_refund_settled, settled)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            continue  # the run closed meanwhile: nobody waits any more
        signaled += 1
        log.info(
            "stripe event %s: refund %s %s; signaled %s",
            event_id,
            settled.provider_reference,
            settled.status,
            cancellation.cancellation_id,
        )
    if not signaled:
        log.info("stripe event %s: no cancellation waits for %s", event_id, payment_id)
    return signaled
