"""The payment provider's signed callbacks, turned into workflow signals.

``refund.succeeded`` names a refund and its payment. The cancellation waiting for it is
the latest cancellation of the order paid with that card payment, while it is in
progress; it gets the ``provider_refund_settled`` signal and stops polling. Everything
else answers ``200 {"ignored": true}``, so the provider doesn't retry an event nobody
waits for. Replays are harmless: the workflow ignores a settlement it already knows.

The signature (``X-Signature``: hex HMAC-SHA256 of the raw body with
``PAYMENT_PROVIDER_WEBHOOK_SECRET``) is checked before the body is parsed.
"""

import hashlib
import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from temporalio.service import RPCError, RPCStatusCode

from activities.provider import ProviderRefundSettled
from domain.errors import CancellationError, ErrorCode
from starter.http.context import Hook, hook
from starter.http.errors import error_responses
from starter.http.models import ProviderEvent, WebhookAnswer
from workflows.order_cancellation import OrderCancellationWorkflow

log = logging.getLogger("starter.http")

SIGNATURE_HEADER = "X-Signature"
REFUND_SUCCEEDED = "refund.succeeded"


class SignedWebhookRoute(APIRoute):
    """Checks the provider's signature over the raw body before FastAPI parses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def verified(request: Request) -> Response:
            secret: str | None = request.app.state.webhook_secret
            body = await request.body()  # cached: the handler parses the same bytes
            check_signature(body, request.headers.get(SIGNATURE_HEADER), secret)
            return await handler(request)

        return verified


def check_signature(body: bytes, signature: str | None, secret: str | None) -> None:
    """Raise ``unauthorized`` unless ``signature`` is the body's HMAC with ``secret``."""
    if not secret:
        raise CancellationError(
            ErrorCode.UNAUTHORIZED,
            "webhooks are not accepted: PAYMENT_PROVIDER_WEBHOOK_SECRET is not set",
        )
    if not signature:
        raise CancellationError(ErrorCode.UNAUTHORIZED, f"the {SIGNATURE_HEADER} header is missing")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise CancellationError(ErrorCode.UNAUTHORIZED, f"the {SIGNATURE_HEADER} does not match")


router = APIRouter(route_class=SignedWebhookRoute)


@router.post(
    "/v1/provider/webhooks",
    responses=error_responses(401, 422, 503),
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
            max_length=256,
            description="Hex HMAC-SHA256 of the raw body with the shared webhook secret.",
        ),
    ],
) -> WebhookAnswer:
    """Signal the cancellation waiting for a settled refund; ignore everything else."""
    refund = event.refund
    if event.type != REFUND_SUCCEEDED or refund is None or refund.status != "succeeded":
        log.info("provider event %s (%s) ignored: not a settled refund", event.id, event.type)
        return WebhookAnswer(ignored=True)
    waiting = await hook.admin_store.settling_cancellations(refund.payment_id)
    settled = ProviderRefundSettled(provider_reference=refund.id, status="succeeded")
    signaled = 0
    accounts = hook.client.provider_accounts
    for cancellation in waiting:
        if accounts.get(cancellation.shop_id) != event.account:
            # A payment id is only unique within its account: another account's event
            # must not touch this shop's run.
            continue
        handle = hook.client.temporal.get_workflow_handle_for(
            OrderCancellationWorkflow.run,
            cancellation.cancellation_id,
            run_id=cancellation.run_id,
        )
        try:
            await handle.signal(OrderCancellationWorkflow.provider_refund_settled, settled)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            continue  # the run closed meanwhile: nobody waits any more
        signaled += 1
        log.info(
            "provider event %s: refund %s settled; signaled %s",
            event.id,
            refund.id,
            cancellation.cancellation_id,
        )
    if not signaled:
        log.info("provider event %s ignored: no cancellation waits for %s", event.id, refund.id)
    return WebhookAnswer(ignored=signaled == 0)
