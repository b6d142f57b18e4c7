"""The admin hook's ASGI app: routes, auth, errors and the health check, wired once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Literal

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from activities.admin_store import AdminStore
from starter.client import CancellationClient
from starter.config import Settings
from starter.http import (
    admin,
    backend,
    bulk,
    cancellations,
    codec,
    stripe_webhooks,
    webhook_endpoints,
    webhooks,
)
from starter.http.auth import Authenticator
from starter.http.context import Hook, hook
from starter.http.errors import (
    BodyLimitMiddleware,
    install_error_handlers,
    install_log_redaction,
)
from starter.http.idempotency import forget_old_keys
from starter.http.models import Health

log = logging.getLogger("starter.http")

# A dependency slower than this counts as down: a load balancer's probe must not hang.
HEALTH_TIMEOUT_SECONDS = 2.0

DESCRIPTION = """\
Merchants' store admins and backend services drive order cancellations here. Every
`/v1/shops/{shop_id}/…` call needs `Authorization: Bearer <token>` of that shop. Errors
answer `{"error": {"code", "message"}}`. Changing calls take an `Idempotency-Key`.
"""


def create_app(client: CancellationClient, settings: Settings, admin_store: AdminStore) -> FastAPI:
    """The admin hook over ``client``; ``admin_store`` holds tokens and idempotency keys.

    The caller owns the client and the pool behind ``admin_store`` and closes them.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pruning = asyncio.create_task(forget_old_keys(admin_store))
        try:
            yield
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning

    app = FastAPI(
        title="Order cancellations: admin hook",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    authenticator = Authenticator(settings.admin_hook_tokens, admin_store)
    app.state.hook = Hook(client, settings, admin_store, authenticator)
    app.state.authenticator = authenticator
    app.state.webhook_secret = settings.provider_webhook_secret
    install_error_handlers(app)
    # The codec's token may come as a path segment: keep it out of every log line.
    install_log_redaction()
    app.add_middleware(BodyLimitMiddleware)
    app.include_router(cancellations.router)
    app.include_router(backend.router)
    app.include_router(bulk.router)
    app.include_router(webhooks.router)
    app.include_router(stripe_webhooks.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(codec.router)
    admin.install(app, settings)  # the merchant's pages at /admin
    # The Web UI calls the codec endpoints from its own origin in the operator's browser.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.codec_cors_origins,
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        allow_credentials=True,
    )
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=Health,
        responses={503: {"model": Health, "description": "Temporal or the database is down"}},
        tags=["operations"],
        summary="Whether Temporal and the database answer (no token)",
    )
    return app


async def healthz(hook: Annotated[Hook, Depends(hook)]) -> JSONResponse:
    """``200`` when Temporal and the database answer within 2 s each, else ``503``."""
    temporal, database = await asyncio.gather(
        _probe("Temporal", hook.client.temporal.service_client.check_health()),
        _probe("database", hook.admin_store.ping()),
    )
    up = temporal == "ok" and database == "ok"
    health = Health(status="ok" if up else "unavailable", temporal=temporal, database=database)
    return JSONResponse(health.model_dump(), status_code=200 if up else 503)


async def _probe(name: str, check: Awaitable[object]) -> Literal["ok", "unavailable"]:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            answer = await check
    except Exception as err:  # any failure means "not answering", which is the report
        log.warning("health: %s does not answer (%s)", name, type(err).__name__)
        return "unavailable"
    return "unavailable" if answer is False else "ok"
