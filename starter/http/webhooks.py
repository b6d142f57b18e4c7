"""The payment provider's signed callbacks, turned into workflow signals.

**Signature**, checked before the body is parsed: ``X-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` with
``PAYMENT_PROVIDER_WEBHOOK_SECRET`` (several ``v1`` are allowed, as while a provider rolls
its secret; one must match, compared in constant time). A timestamp more than
:data:`SIGNATURE_TOLERANCE` off the hook's clock is refused, so a captured delivery can't
be replayed later. Missing, garbled, stale or wrong: ``401 unauthorized``.

**Once per event id**: each event id (per provider account) is acted on once, however often
the provider delivers it; a repeat answers ``200 {"ignored": true}`` and signals nothing.
A repeat that arrives while another request still acts on the event answers ``409
invalid_transition``, so the provider delivers it again later (should that request fail,
the event is released and the redelivery acts). The ids are kept :data:`EVENT_RETENTION`.

**What it does**: ``refund.succeeded`` and ``refund.failed`` name a refund and its payment.
The runs that may hold that refund are the cancellations with a line carrying its id and
the latest cancellation of each order paid with that card payment: in progress (or
undoing) for a success, and canceled ones too for a failure (a refund can fail after the
cancellation completed). Each such run of the event's account gets the
``provider_refund_settled`` signal (``status`` ``succeeded`` or ``failed``, with the
provider's ``failure_code``), but only when its current view (the ``status`` query, which
adds nothing to the history) has a line with that ``provider_reference`` whose status the
event would change: so nobody can grow a run's history through this route. Everything
else answers ``200 {"ignored": true}``, so the provider doesn't retry an event nobody
waits for.
"""

import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from temporalio.service import RPCError, RPCStatusCode

from activities.admin_store import SETTLING_STATUSES, ClaimOutcome, SettlingCancellation
from activities.provider import ProviderRefundSettled
from domain.cancellation import CancellationStatus, CancellationView, RefundStatus
from domain.errors import CancellationError, ErrorCode
from starter.http.context import Hook, hook
from starter.http.errors import error_responses
from starter.http.models import ProviderEvent, WebhookAnswer
from workflows.order_cancellation import OrderCancellationWorkflow

log = logging.getLogger("starter.http")

SIGNATURE_HEADER = "X-Signature"
MAX_SIGNATURE_HEADER_LENGTH = 1024
"""Room for a timestamp and several ``v1`` signatures; anything longer is garbage."""

SIGNATURE_TOLERANCE = timedelta(minutes=5)
"""How far a delivery's ``t`` may be from the hook's clock: Stripe's default tolerance,
generous for clock skew and slow networks, short enough that a captured delivery can't be
replayed later (the event-id check stops replays within it)."""

EVENT_RETENTION = timedelta(days=7)
"""How long acted-on event ids are remembered: far past any provider's redelivery (the
sandbox gives up after about a minute, Stripe after three days)."""

EVENT_LEASE = timedelta(seconds=30)
"""An event claimed this long ago but never finished belongs to a request that died; a
redelivery may act on it. Longer than handling one event takes, shorter than the
provider's later retries."""

REFUND_SUCCEEDED = "refund.succeeded"
REFUND_FAILED = "refund.failed"

_REFUND_EVENTS = {
    REFUND_SUCCEEDED: (
        RefundStatus.SUCCEEDED,
        frozenset(SETTLING_STATUSES),
    ),
    REFUND_FAILED: (
        RefundStatus.FAILED,
        frozenset({*SETTLING_STATUSES, CancellationStatus.CANCELED}),
    ),
}
"""Event type → the refund status it reports, and the cancellations that may care."""

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_HEX_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


class SignedWebhookRoute(APIRoute):
    """Checks the provider's signature over the raw body before FastAPI parses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def verified(request: Request) -> Response:
            secret: str | None = request.app.state.webhook_secret
            body = await request.body()  # cached: the handler parses the same bytes
            check_signature(body, request.headers.get(SIGNATURE_HEADER), secret, time.time())
            return await handler(request)

        return verified


def check_signature(body: bytes, header: str | None, secret: str | None, now: float) -> None:
    """Raise ``unauthorized`` unless ``header`` signs ``body`` with ``secret`` near ``now``.

    Args:
        body: The raw request body, exactly as received.
        header: The ``X-Signature`` value, ``t=<unix seconds>,v1=<hex>[,v1=<hex>…]``.
        secret: ``PAYMENT_PROVIDER_WEBHOOK_SECRET``; without one every webhook is refused.
        now: The hook's clock, in unix seconds.
    """
    if not secret:
        raise CancellationError(
            ErrorCode.UNAUTHORIZED,
            "webhooks are not accepted: PAYMENT_PROVIDER_WEBHOOK_SECRET is not set",
        )
    if not header:
        raise CancellationError(ErrorCode.UNAUTHORIZED, f"the {SIGNATURE_HEADER} header is missing")
    timestamp, signatures = _parse_signature(header)
    if abs(now - timestamp) > SIGNATURE_TOLERANCE.total_seconds():
        raise CancellationError(
            ErrorCode.UNAUTHORIZED,
            f"the {SIGNATURE_HEADER} timestamp is more than"
            f" {int(SIGNATURE_TOLERANCE.total_seconds())} s off this server's clock",
        )
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    # Every candidate is compared (no early exit), each in constant time.
    matches = [hmac.compare_digest(expected, candidate.encode()) for candidate in signatures]
    if not any(matches):
        raise CancellationError(ErrorCode.UNAUTHORIZED, f"the {SIGNATURE_HEADER} does not match")


def _parse_signature(header: str) -> tuple[int, list[str]]:
    """``(t, [v1, …])`` from ``t=…,v1=…``; other schemes are skipped, as providers advise."""
    garbled = CancellationError(
        ErrorCode.UNAUTHORIZED,
        f"the {SIGNATURE_HEADER} header must be t=<unix seconds>,v1=<hex HMAC-SHA256>",
    )
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        raise garbled
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise garbled
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value.lower())
    if len(timestamps) != 1 or not _TIMESTAMP.match(timestamps[0]) or not signatures:
        raise garbled
    if not all(_HEX_SIGNATURE.match(signature) for signature in signatures):
        raise garbled
    return int(timestamps[0]), signatures


router = APIRouter(route_class=SignedWebhookRoute)


@router.post(
    "/v1/provider/webhooks",
    responses=error_responses(401, 409, 422, 503),
    tags=["provider"],
    summary="The payment provider's signed callbacks (no bearer token)",
)
async def provider_webhook(
    event: ProviderEvent,
    hook: Annotated[Hook, Depends(hook)],
    x_signature: Annotated[
        str,
        Header(
            alias=SIGNATURE_HEADER,
            max_length=MAX_SIGNATURE_HEADER_LENGTH,
            description=(
                "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>' with the shared"
                " webhook secret>; within 5 minutes of the hook's clock."
            ),
        ),
    ],
) -> WebhookAnswer:
    """Act once per event id: signal the runs whose refund line the event changes."""
    store = hook.admin_store
    account = event.account or ""
    claim = await store.claim_provider_event(event.id, account, EVENT_LEASE)
    if claim is ClaimOutcome.REPLAY:
        log.info("provider event %s ignored: already acted on", event.id)
        return WebhookAnswer(ignored=True)
    if claim is ClaimOutcome.IN_PROGRESS:
        # Not "ignored": should that request fail, this delivery's retry must act.
        raise CancellationError(
            ErrorCode.INVALID_TRANSITION,
            f"event {event.id} is being handled by another request; deliver it again later",
        )
    try:
        signaled = await _act_on(event, hook)
    except BaseException:
        # A redelivery must find the event unclaimed, or nobody would act on it.
        with contextlib.suppress(Exception):
            await store.release_provider_event(event.id, account)
        raise
    await store.finish_provider_event(event.id, account)
    await _forget_old_events(hook)
    return WebhookAnswer(ignored=signaled == 0)


async def _act_on(event: ProviderEvent, hook: Hook) -> int:
    """Signal every run whose refund line this event changes; returns how many."""
    refund = event.refund
    known = _REFUND_EVENTS.get(event.type)
    if known is None or refund is None or refund.status != known[0].value:
        log.info("provider event %s (%s) ignored: not a refund outcome", event.id, event.type)
        return 0
    status, statuses = known
    candidates = await hook.admin_store.refund_cancellations(refund.payment_id, refund.id, statuses)
    failure_code = _failure_code(event) if status == RefundStatus.FAILED else None
    settled = ProviderRefundSettled(
        provider_reference=refund.id, status=status.value, failure_code=failure_code
    )
    signaled = 0
    accounts = hook.client.provider_accounts
    for cancellation in candidates:
        if accounts.get(cancellation.shop_id) != event.account:
            # A payment id is only unique within its account: another account's event
            # must not touch this shop's run.
            continue
        if await _signal_if_it_changes(hook, cancellation, settled, refund.payment_id):
            signaled += 1
            log.info(
                "provider event %s: refund %s %s; signaled %s",
                event.id,
                refund.id,
                status.value,
                cancellation.cancellation_id,
            )
    if not signaled:
        log.info("provider event %s ignored: no run waits for %s", event.id, refund.id)
    return signaled


async def _signal_if_it_changes(
    hook: Hook,
    cancellation: SettlingCancellation,
    settled: ProviderRefundSettled,
    payment_id: str,
) -> bool:
    """Signal the run only if its view has the refund in another status than the event's."""
    handle = hook.client.temporal.get_workflow_handle_for(
        OrderCancellationWorkflow.run,
        cancellation.cancellation_id,
        run_id=cancellation.run_id,
    )
    try:
        view = await handle.query(OrderCancellationWorkflow.status)
        if _in_flight(view, settled.provider_reference, payment_id):
            # The run's refund call of this payment has not returned yet, so no line holds
            # the reference: answering "ignored" would drop a refund.failed for good (the
            # call's retry may be answered with the first, stale, success). Deliver later.
            raise CancellationError(
                ErrorCode.INVALID_TRANSITION,
                f"a refund of payment {payment_id} is still in flight; deliver the event again",
            )
        if not _would_change(view, settled):
            return False
        await handle.signal(OrderCancellationWorkflow.provider_refund_settled, settled)
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
        return False  # the run is gone: nobody waits any more
    return True


def _in_flight(view: CancellationView, reference: str, payment_id: str) -> bool:
    """A refund line of ``payment_id`` is being paid and holds no provider reference yet."""
    return any(
        line.payment_id == payment_id
        and line.status is RefundStatus.PROCESSING
        and line.provider_reference is None
        for line in view.refunds
    ) and not any(line.provider_reference == reference for line in view.refunds)


def _would_change(view: CancellationView, settled: ProviderRefundSettled) -> bool:
    return any(
        line.provider_reference == settled.provider_reference and line.status != settled.status
        for line in view.refunds
    )


def _failure_code(event: ProviderEvent) -> str | None:
    code = (event.refund.model_extra or {}).get("failure_code") if event.refund else None
    return code[:64] if isinstance(code, str) else None


async def _forget_old_events(hook: Hook) -> None:
    """Prune event ids past :data:`EVENT_RETENTION` (cheap: an index range, usually empty)."""
    try:
        await hook.admin_store.forget_provider_events(EVENT_RETENTION)
    except Exception as err:  # the event was handled; pruning can wait for the next one
        log.warning("could not forget old provider events: %s", type(err).__name__)
