"""The admin hook over real HTTP: uvicorn on a loopback port, with a worker, Temporal's dev
server, the migrated test database and a provider sandbox that sends its webhooks to the hook.

The hook and its worker run in a thread with their own event loop, like a separate process:
the tests' loop only sends requests, and sync tests (the schemathesis fuzz run) can call the
hook while the tests' loop is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.admin_store import AdminStore
from activities.database import StoreRepository, create_pool
from activities.provider import ProviderActivities
from activities.provider_client import PaymentProviderClient
from activities.store import StoreActivities
from starter import card_payments
from starter.client import CancellationClient, connect_temporal
from starter.codec import new_key
from starter.config import Settings
from starter.http.app import create_app
from starter.http.server import open_hook
from tools import ports
from worker import build_workers

WEBHOOK_SECRET = "whsec-test-" + uuid.uuid4().hex
ENV_SHOP = f"env-shop-{uuid.uuid4().hex[:8]}"
ENV_TOKEN = "env-token-" + secrets.token_urlsafe(16)
# Shops with their own account at the provider (PROVIDER_ACCOUNTS), named so that one's id
# is a prefix of another's: release 1 gave shop X + order "a-1" and shop "X-a" + order "1"
# the same workflow id.
_TENANT = uuid.uuid4().hex[:6]
TENANT_ACCOUNTS = {
    f"t{_TENANT}acc": f"acct_{_TENANT}_a",
    f"t{_TENANT}acc-a": f"acct_{_TENANT}_b",
    f"t{_TENANT}ac": f"acct_{_TENANT}_c",
}
# uvicorn answers within a second on a healthy machine; a cold CI box may be slower.
HOOK_STARTUP_TIMEOUT_SECONDS = 30.0


@dataclass
class RunningHook:
    """A hook served by uvicorn in its own thread and event loop."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    failure: list[BaseException] = field(default_factory=list)


@contextlib.contextmanager
def serve_in_thread(
    build: Callable[[], AbstractAsyncContextManager[FastAPI]], port: int | None = None
) -> Iterator[RunningHook]:
    """Serve the app ``build`` makes (inside the thread's loop) until the block ends."""
    port = port or ports.free_port()
    ready = threading.Event()
    holder: dict[str, uvicorn.Server] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        async with build() as app:
            # log_config=None: uvicorn's loggers propagate to the root logger, where the tests'
            # log capture (caplog) can read every access line.
            config = uvicorn.Config(
                app,
                host=ports.LOOPBACK,
                port=port,
                log_config=None,
                access_log=True,
                lifespan="on",
            )
            server = uvicorn.Server(config)
            holder["server"] = server
            ready.set()
            await server.serve()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as err:  # reported by the waiting fixture
            failure.append(err)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name=f"admin-hook-{port}", daemon=True)
    thread.start()
    ready.wait(HOOK_STARTUP_TIMEOUT_SECONDS)
    deadline = time.monotonic() + HOOK_STARTUP_TIMEOUT_SECONDS
    while not (holder.get("server") and holder["server"].started):
        if failure:
            raise RuntimeError(f"the admin hook did not start: {failure[0]!r}") from failure[0]
        if time.monotonic() > deadline:
            raise TimeoutError("the admin hook did not start in time")
        time.sleep(0.02)
    hook = RunningHook(f"http://{ports.LOOPBACK}:{port}", holder["server"], thread, failure)
    try:
        yield hook
    finally:
        hook.server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def hook_with_worker(settings: Settings, provider_url: str) -> AsyncIterator[FastAPI]:
    """The production wiring (:func:`open_hook`) plus a worker on the settings' task queue."""
    async with AsyncExitStack() as stack:
        temporal = await connect_temporal(settings)
        pool = await create_pool(settings.require_database())
        stack.push_async_callback(pool.close)
        provider = PaymentProviderClient(provider_url)
        stack.push_async_callback(provider.aclose)
        activities: list[StoreActivities | ProviderActivities] = [
            StoreActivities(StoreRepository(pool)),
            ProviderActivities(provider, settings.provider_accounts),
        ]
        for worker in build_workers(temporal, activities, task_queue=settings.task_queue):
            await stack.enter_async_context(worker)
        yield await stack.enter_async_context(open_hook(settings))


def _settings(dev_env: WorkflowEnvironment, database_url: str, **changes: Any) -> Settings:
    config = dev_env.client.service_client.config
    values: dict[str, Any] = {
        "temporal_connect": {"target_host": config.target_host, "namespace": "default"},
        "database_url": database_url,
        "admin_hook_tokens": {ENV_TOKEN: ENV_SHOP},
        "provider_webhook_secret": WEBHOOK_SECRET,
        "provider_accounts": TENANT_ACCOUNTS,
        "admin_session_key": secrets.token_urlsafe(32),
        "task_queue": f"http-test-{uuid.uuid4().hex}",
        # Webhook endpoints on the tests' loopback receivers (tests/http/test_events.py).
        "webhooks_allow_http": True,
    }
    return Settings(**(values | changes))


def _root_conftest(config: pytest.Config) -> Any:
    """``tests/conftest.py`` as pytest loaded it (``from conftest import`` would find this file:
    every conftest is a top-level module named ``conftest``)."""
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    module = config.pluginmanager.get_plugin(str(path))
    assert module is not None, f"pytest did not load {path}"
    return module


# -- the hook under test -------------------------------------------------------------------------


@dataclass(frozen=True)
class HookStack:
    """The running hook and the sandbox its worker pays through."""

    url: str
    sandbox_url: str
    settings: Settings


@pytest.fixture(scope="session")
def hook_stack(
    request: pytest.FixtureRequest, dev_env: WorkflowEnvironment, database_url: str
) -> Iterator[HookStack]:
    """The hook with a worker, and a sandbox that posts its webhooks to the hook."""
    port = ports.free_port()
    url = f"http://{ports.LOOPBACK}:{port}"
    with _root_conftest(request.config).run_provider_sandbox(
        webhook_url=f"{url}/v1/provider/webhooks", webhook_secret=WEBHOOK_SECRET
    ) as sandbox:
        settings = _settings(dev_env, database_url, provider_url=sandbox.url)
        with serve_in_thread(lambda: hook_with_worker(settings, sandbox.url), port):
            yield HookStack(url=url, sandbox_url=sandbox.url, settings=settings)


@dataclass(frozen=True)
class CodecHook:
    """A hook that serves the codec endpoints, and the operators' token for them."""

    url: str
    token: str
    encryption_key: str


@pytest.fixture(scope="session")
def codec_hook(dev_env: WorkflowEnvironment, database_url: str) -> Iterator[CodecHook]:
    """The production wiring (:func:`open_hook`) with payload encryption and a codec token."""
    token = "codec-" + secrets.token_urlsafe(24)
    key = f"k1:{new_key()}"
    settings = _settings(dev_env, database_url, payload_encryption_key=key, codec_auth_token=token)
    with serve_in_thread(lambda: open_hook(settings)) as hook:
        yield CodecHook(url=hook.url, token=token, encryption_key=key)


@pytest.fixture(scope="session")
def dead_temporal_hook(database_url: str) -> Iterator[str]:
    """A hook whose Temporal address has nothing listening (the database is fine)."""
    settings = Settings(
        temporal_connect={"target_host": f"{ports.LOOPBACK}:{ports.free_port()}"},
        database_url=database_url,
        admin_hook_tokens={ENV_TOKEN: ENV_SHOP},
        provider_webhook_secret=WEBHOOK_SECRET,
    )
    with serve_in_thread(lambda: open_hook(settings)) as hook:
        yield hook.url


@pytest.fixture(scope="session")
def dead_provider_hook(
    dev_env: WorkflowEnvironment, database_url: str
) -> Iterator[tuple[str, str, str]]:
    """``(url, shop_id, token)`` of a hook whose payment provider has nothing listening
    (Temporal and the database are fine)."""
    dead = f"http://{ports.LOOPBACK}:{ports.free_port()}"
    settings = _settings(dev_env, database_url, provider_url=dead)
    with serve_in_thread(lambda: open_hook(settings)) as hook:
        yield hook.url, ENV_SHOP, ENV_TOKEN


@pytest.fixture(scope="session")
def dead_database_hook(dev_env: WorkflowEnvironment) -> Iterator[str]:
    """A hook whose database has nothing listening (Temporal is fine)."""
    settings = _settings(dev_env, f"postgresql://nobody@{ports.LOOPBACK}:{ports.free_port()}/x")

    @asynccontextmanager
    async def build() -> AsyncIterator[FastAPI]:
        temporal = await connect_temporal(settings)
        # min_size=0: the pool connects on first use, so the app starts and then fails per call.
        pool = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=2, timeout=2)
        client = CancellationClient(temporal, StoreRepository(pool), pool=pool)
        try:
            yield create_app(client, settings, AdminStore(pool))
        finally:
            await client.close()

    with serve_in_thread(build) as hook:
        yield hook.url


# -- the tests' side -----------------------------------------------------------------------------


@pytest.fixture
def store(pool: asyncpg.Pool) -> StoreRepository:
    return StoreRepository(pool)


@pytest.fixture
def temporal(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


class Shop:
    """One shop with its own token, talking to the hook over HTTP."""

    def __init__(
        self,
        shop_id: str,
        token: str,
        http: httpx.AsyncClient,
        sandbox: str,
        account: str | None = None,
    ) -> None:
        self.shop_id = shop_id
        self.token = token
        self.http = http
        self.sandbox = sandbox
        self.account = account
        """The shop's account at the provider; ``None`` for the default account."""
        self._orders = 0

    def _sandbox(self) -> httpx.AsyncClient:
        headers = {} if self.account is None else {"Provider-Account": self.account}
        return httpx.AsyncClient(base_url=self.sandbox, trust_env=False, headers=headers)

    @property
    def base(self) -> str:
        return f"/v1/shops/{self.shop_id}"

    def order_path(self, order_id: str, suffix: str = "") -> str:
        return f"{self.base}/orders/{order_id}{suffix}"

    def cancellation_path(self, order_id: str, suffix: str = "") -> str:
        return self.order_path(order_id, "/cancellation" + suffix)

    async def card_payment(
        self, amount: int, capture: bool = True, currency: str = "KRW", **behavior: Any
    ) -> str:
        provider = PaymentProviderClient(self.sandbox)
        try:
            payment = await card_payments.create_payment(
                provider,
                amount,
                currency,
                capture=capture,
                behavior=behavior or None,
                account=self.account,
            )
        finally:
            await provider.aclose()
        return str(payment["id"])

    async def payment(self, payment_id: str) -> dict[str, Any]:
        async with self._sandbox() as sandbox:
            answer = await sandbox.get(f"/v1/payments/{payment_id}")
            answer.raise_for_status()
            result: dict[str, Any] = answer.json()
            return result

    async def put_order(
        self,
        *,
        tenders: list[dict[str, Any]] | None = None,
        status: str = "paid",
        items: list[dict[str, Any]] | None = None,
        shipping_fee: int = 3000,
        customer_id: str = "cust-1",
        order_id: str | None = None,
    ) -> str:
        """Create an order over HTTP (a captured card pays it unless ``tenders`` say else)."""
        self._orders += 1
        order_id = order_id or f"o{self._orders}-{uuid.uuid4().hex[:6]}"
        items = items or [
            {"item_id": "i1", "sku": "sku-mug", "quantity": 2, "unit_price": 10000},
            {"item_id": "i2", "sku": "sku-tee", "quantity": 1, "unit_price": 7000},
        ]
        total = sum(i["quantity"] * i["unit_price"] for i in items) + shipping_fee
        if tenders is None:
            payment = await self.card_payment(total)
            tenders = [{"tender_id": "t1", "kind": "card", "amount": total, "payment_id": payment}]
        answer = await self.http.put(
            self.order_path(order_id),
            json={
                "customer_id": customer_id,
                "currency": "KRW",
                "status": status,
                "shipping_fee": shipping_fee,
                "items": items,
                "tenders": tenders,
            },
        )
        assert answer.status_code == 201, answer.text
        return order_id

    async def request_cancellation(self, order_id: str, **extra: Any) -> dict[str, Any]:
        """A customer's request from My Account; returns the view."""
        body = {"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"}
        answer = await self.http.post(self.cancellation_path(order_id), json=body | extra)
        assert answer.status_code == 201, answer.text
        view: dict[str, Any] = answer.json()
        return view

    async def view(self, order_id: str) -> dict[str, Any]:
        answer = await self.http.get(self.cancellation_path(order_id))
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    async def wait_for(
        self, order_id: str, predicate: Callable[[dict[str, Any]], bool], within: float = 20.0
    ) -> dict[str, Any]:
        """Read the cancellation over HTTP until ``predicate`` holds."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            view = await self.view(order_id)
            if predicate(view):
                return view
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not reached within {within}s: {view}")
            await asyncio.sleep(0.1)


def bearer_client(url: str, token: str, **options: Any) -> httpx.AsyncClient:
    """A client of the hook at ``url`` that sends ``token`` as its bearer token, never through
    a proxy from the environment; ``options`` go to :class:`httpx.AsyncClient`."""
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False, **options
    )


@asynccontextmanager
async def _shop(
    hook_stack: HookStack, pool: asyncpg.Pool, shop_id: str | None = None
) -> AsyncIterator[Shop]:
    shop_id = shop_id or f"shop-{uuid.uuid4().hex[:10]}"
    token = secrets.token_urlsafe(24)
    await AdminStore(pool).add_token(shop_id, token)
    async with bearer_client(hook_stack.url, token, timeout=60) as http:
        yield Shop(shop_id, token, http, hook_stack.sandbox_url, TENANT_ACCOUNTS.get(shop_id))


@pytest.fixture(scope="session")
def make_shop(
    hook_stack: HookStack, pool: asyncpg.Pool
) -> Callable[[], AbstractAsyncContextManager[Shop]]:
    """Make shops for fixtures of a wider scope than :func:`shop`."""
    return lambda: _shop(hook_stack, pool)


@pytest_asyncio.fixture(loop_scope="session")
async def shop(hook_stack: HookStack, pool: asyncpg.Pool) -> AsyncIterator[Shop]:
    """A fresh shop with a token stored (hashed) in the database."""
    async with _shop(hook_stack, pool) as value:
        yield value


@pytest_asyncio.fixture(loop_scope="session")
async def other_shop(hook_stack: HookStack, pool: asyncpg.Pool) -> AsyncIterator[Shop]:
    """A second shop, whose token must get nothing of :func:`shop`'s."""
    async with _shop(hook_stack, pool) as value:
        yield value


@pytest_asyncio.fixture(loop_scope="session")
async def anonymous(hook_stack: HookStack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the hook without any token."""
    async with httpx.AsyncClient(base_url=hook_stack.url, trust_env=False, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def make_tenant(
    hook_stack: HookStack, pool: asyncpg.Pool
) -> Callable[[str], AbstractAsyncContextManager[Shop]]:
    """A shop of :data:`TENANT_ACCOUNTS` by its id, with its own account at the provider."""
    return lambda shop_id: _shop(hook_stack, pool, shop_id)
