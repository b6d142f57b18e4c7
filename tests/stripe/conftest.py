"""localstripe as a real process for the Stripe adapter's tests, and a client pointed at it.

localstripe (GPL-3.0) is never imported: :mod:`tools.localstripe` runs it as its own
process on a free loopback port, once per session, with an empty store.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.stripe_provider import StripeProviderClient
from starter.config import Settings
from starter.http.server import open_hook
from tools import localstripe, ports, processes
from worker import activity_dependencies, build_workers

# localstripe has nothing to flush; SIGTERM ends it at once.
STOP_TIMEOUT_SECONDS = 10.0

# The manual suite talks to Stripe's test mode; without a test key it is not collected at
# all (rather than collected and skipped), so a CI run shows no skipped test.
collect_ignore = (
    []
    if os.environ.get("STRIPE_API_KEY", "").startswith("sk_test_")
    else ["test_stripe_test_mode.py"]
)


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """``STRIPE_API_BASE`` of a localstripe process started for this session."""
    work_dir = Path(tempfile.mkdtemp(prefix="test-localstripe-"))
    port = ports.free_port()
    process = localstripe.start(port, work_dir / "localstripe.log")
    try:
        yield localstripe.api_base(port)
    finally:
        processes.stop(process, STOP_TIMEOUT_SECONDS)
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def stripe_client(localstripe_url: str) -> AsyncIterator[StripeProviderClient]:
    """The adapter over localstripe (a fresh connection pool per test)."""
    client = StripeProviderClient(localstripe.LOCALSTRIPE_API_KEY, api_base=localstripe_url)
    try:
        yield client
    finally:
        await client.aclose()


# -- the whole product on Stripe (PAYMENT_PROVIDER=stripe against localstripe) -------------------

STRIPE_SHOP = f"stripe-shop-{uuid.uuid4().hex[:8]}"
STRIPE_TOKEN = "stripe-token-" + secrets.token_urlsafe(16)
STRIPE_WEBHOOK_SECRET = "whsec_test_" + uuid.uuid4().hex


@dataclass(frozen=True)
class StripeStack:
    """The hook's app and a worker, wired by the production code from Stripe settings."""

    settings: Settings
    shop_id: str
    http: httpx.AsyncClient
    """The hook (in process, through ASGI), authorized as :data:`STRIPE_SHOP`."""
    stripe: StripeProviderClient
    """The tests' own Stripe client, to make and read PaymentIntents."""
    temporal: Client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stripe_stack(
    dev_env: WorkflowEnvironment, database_url: str, localstripe_url: str
) -> AsyncIterator[StripeStack]:
    """The worker (``worker.activity_dependencies``) and the hook (``open_hook``), both
    choosing their provider from ``PAYMENT_PROVIDER=stripe`` as in production."""
    config = dev_env.client.service_client.config
    settings = Settings(
        temporal_connect={"target_host": config.target_host, "namespace": "default"},
        database_url=database_url,
        admin_hook_tokens={STRIPE_TOKEN: STRIPE_SHOP},
        task_queue=f"stripe-test-{uuid.uuid4().hex}",
        payment_provider="stripe",
        stripe_api_key=localstripe.LOCALSTRIPE_API_KEY,
        stripe_api_base=localstripe_url,
        stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
    )
    async with AsyncExitStack() as stack:
        activity_objects = await stack.enter_async_context(activity_dependencies(settings))
        for worker in build_workers(
            dev_env.client, activity_objects, task_queue=settings.task_queue
        ):
            await stack.enter_async_context(worker)
        app = await stack.enter_async_context(open_hook(settings))
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://hook.test",
                headers={"Authorization": f"Bearer {STRIPE_TOKEN}"},
                timeout=60,
            )
        )
        client = StripeProviderClient(localstripe.LOCALSTRIPE_API_KEY, api_base=localstripe_url)
        stack.push_async_callback(client.aclose)
        yield StripeStack(
            settings=settings,
            shop_id=STRIPE_SHOP,
            http=http,
            stripe=client,
            temporal=dev_env.client,
        )
