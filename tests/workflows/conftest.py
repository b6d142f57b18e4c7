"""A whole cancellation system per test: a worker on a fresh task queue, real activities
against the test database and the provider sandbox, and the Python client."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.database import StoreRepository
from activities.provider import ProviderActivities
from activities.provider_client import PaymentProviderClient
from activities.store import StoreActivities
from domain.cancellation import CancellationStatus, CancellationView
from domain.order import OrderStatus, TenderKind
from domain.shop import ShopSettings
from starter import card_payments
from starter.client import CancellationClient
from tests.conftest import order_document
from worker import build_workers
from workflows.order_cancellation import OrderCancellationWorkflow


@dataclass
class Harness:
    """One test's cancellation system and the shop it works in."""

    env: WorkflowEnvironment
    client: CancellationClient
    provider: PaymentProviderClient
    store: StoreRepository
    pool: asyncpg.Pool
    shop_id: str = field(default_factory=lambda: f"shop-{uuid.uuid4().hex[:8]}")
    _orders: int = 0

    @property
    def temporal(self) -> Client:
        return self.client.temporal

    async def card_payment(self, amount: int, currency: str = "KRW", **behavior: Any) -> str:
        capture = behavior.pop("capture", True)
        payment = await card_payments.create_payment(
            self.provider, amount, currency, capture=capture, behavior=behavior or None
        )
        return str(payment["id"])

    async def order(
        self,
        *,
        items: list[tuple[str, int, int]] | None = None,
        shipping_fee: int = 3000,
        tenders: list[tuple[TenderKind, int]] | None = None,
        status: OrderStatus = OrderStatus.PAID,
        card_behavior: dict[str, Any] | None = None,
        currency: str = "KRW",
    ) -> str:
        """Create an order (card tenders get a real sandbox payment); returns its id."""
        self._orders += 1
        order_id = f"o{self._orders}-{uuid.uuid4().hex[:6]}"
        items = items if items is not None else [("sku-mug", 2, 10000), ("sku-tee", 1, 7000)]
        total = sum(q * p for _, q, p in items) + shipping_fee
        if tenders is None:
            tenders = [] if status is OrderStatus.AWAITING_PAYMENT else [(TenderKind.CARD, total)]
        paid = []
        for kind, amount in tenders:
            payment_id = None
            if kind is TenderKind.CARD:
                payment_id = await self.card_payment(amount, currency, **(card_behavior or {}))
            paid.append((kind, amount, payment_id))
        doc = order_document(
            items,
            paid,
            customer_id="cust-1",
            currency=currency,
            status=status,
            shipping_fee=shipping_fee,
        )
        await self.store.put_order(self.shop_id, order_id, doc)
        return order_id

    async def settings(self, **values: Any) -> None:
        await self.store.put_settings(self.shop_id, ShopSettings(**values))

    def handle(self, cancellation_id: str) -> WorkflowHandle[Any, CancellationView]:
        return self.temporal.get_workflow_handle_for(OrderCancellationWorkflow.run, cancellation_id)

    async def view(self, cancellation_id: str) -> CancellationView:
        return await self.handle(cancellation_id).query(OrderCancellationWorkflow.status)

    async def wait_refund_at_provider(self, cancellation_id: str) -> CancellationView:
        """Wait until the first refund line carries the provider's reference: the provider
        has that refund."""
        return await self.wait_for(
            cancellation_id, lambda v: v.refunds and v.refunds[0].provider_reference
        )

    async def wait_for(
        self, cancellation_id: str, predicate: Any, within: float = 30.0
    ) -> CancellationView:
        """Poll the ``status`` query until ``predicate(view)`` holds."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            view = await self.view(cancellation_id)
            if predicate(view):
                return view
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not reached in {within}s; view: {view}")
            await asyncio.sleep(0.05)

    async def wait_status(
        self, cancellation_id: str, status: CancellationStatus, within: float = 30.0
    ) -> CancellationView:
        return await self.wait_for(cancellation_id, lambda v: v.status is status, within)

    async def balances(self, customer_id: str = "cust-1") -> tuple[int, int] | None:
        return await self.store.get_balances(self.shop_id, customer_id)

    async def events(self, cancellation_id: str) -> list[str]:
        return [e["event"] for e in await self.store.events(cancellation_id)]

    async def outbox(self) -> list[tuple[str, str]]:
        return [(m["recipient"], m["template"]) for m in await self.store.outbox(self.shop_id)]

    async def order_status(self, order_id: str) -> OrderStatus:
        return (await self.store.get_order(self.shop_id, order_id)).status

    async def ledger(self, payment_id: str) -> list[dict[str, Any]]:
        payment = await self.provider.get_payment(payment_id)
        return list(payment["ledger"])

    async def refunds_in_ledger(self, order_id: str) -> list[dict[str, Any]]:
        order = await self.store.get_order(self.shop_id, order_id)
        entries: list[dict[str, Any]] = []
        for tender in order.tenders:
            if tender.payment_id:
                entries += [
                    e
                    for e in await self.ledger(tender.payment_id)
                    if e["type"] in ("refund", "void")
                ]
        return entries


HISTORIES = Path(__file__).parent / "histories"


async def _record_histories(folder: str, test_name: str, client: Client, task_queue: str) -> None:
    """Save the histories of a test's runs for the replay suite (RECORD_HISTORIES=<folder>)."""
    target = HISTORIES / folder
    target.mkdir(parents=True, exist_ok=True)
    runs = [w async for w in client.list_workflows(f"TaskQueue = '{task_queue}'")]
    for n, run in enumerate(sorted(runs, key=lambda r: r.start_time), start=1):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        path = target / f"{test_name}--{n}.json"
        path.write_text(history.to_json())


@pytest_asyncio.fixture(loop_scope="session")
async def make_harness(
    pool: asyncpg.Pool, provider: PaymentProviderClient, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """Build a harness on a Temporal environment, with a worker running for the test."""
    stack: list[Any] = []
    queues: list[tuple[Client, str]] = []

    async def build(env: WorkflowEnvironment, temporal: Client | None = None) -> Harness:
        """A worker and client on ``env`` (or on ``temporal``, e.g. with encryption)."""
        temporal = temporal or env.client
        task_queue = f"test-{uuid.uuid4().hex}"
        store = StoreRepository(pool)
        workers = build_workers(
            temporal,
            [StoreActivities(store), ProviderActivities(provider)],
            task_queue=task_queue,
        )
        for worker in workers:
            await worker.__aenter__()
            stack.append(worker)
        if env.supports_time_skipping is False and temporal is env.client:
            queues.append((env.client, task_queue))
        client = CancellationClient(temporal, store, task_queue=task_queue)
        return Harness(env=env, client=client, provider=provider, store=store, pool=pool)

    yield build
    folder = os.environ.get("RECORD_HISTORIES")
    if folder:
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
        for client, task_queue in queues:
            await _record_histories(folder, name, client, task_queue)
    for worker in reversed(stack):
        await worker.__aexit__(None, None, None)


@pytest_asyncio.fixture(loop_scope="session")
async def h(make_harness: Any, dev_env: WorkflowEnvironment) -> Harness:
    """A harness on the real dev server."""
    harness: Harness = await make_harness(dev_env)
    return harness


@pytest_asyncio.fixture(loop_scope="session")
async def ts(make_harness: Any, time_skipping_env: WorkflowEnvironment) -> Harness:
    """A harness on the time-skipping test server (for reminders and windows)."""
    harness: Harness = await make_harness(time_skipping_env)
    return harness
