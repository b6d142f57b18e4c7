"""A cancellation system per test for bulk jobs: a worker on a fresh task queue (in this
process, or as its own ``python worker.py`` process that a test can kill), real activities
against the test database and the provider sandbox, and the clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.bulk_store import BulkRepository
from activities.database import StoreRepository
from activities.provider import ProviderActivities
from activities.provider_client import PaymentProviderClient
from activities.store import StoreActivities
from domain.bulk import BulkJob, BulkStatus
from domain.order import OrderStatus, TenderKind
from starter.bulk import BulkClient
from starter.client import CancellationClient
from tests.conftest import order_document
from worker import build_workers

REPO_ROOT = Path(__file__).resolve().parents[2]
SKU = "sku-sold-out"
OTHER_SKU = "sku-other"
# A worker process connects and applies migrations in a second or two; a loaded box is slower.
WORKER_STARTUP_SECONDS = 60.0


@dataclass
class Shop:
    """One test's shop, with a client for cancellations and one for bulk jobs."""

    env: WorkflowEnvironment
    client: CancellationClient
    provider: PaymentProviderClient
    store: StoreRepository
    pool: asyncpg.Pool
    task_queue: str
    shop_id: str = field(default_factory=lambda: f"shop-{uuid.uuid4().hex[:8]}")
    _orders: int = 0

    def bulk(self, **tuning: Any) -> BulkClient:
        return BulkClient(self.client, task_queue=self.task_queue, **tuning)

    @property
    def jobs(self) -> BulkRepository:
        return BulkRepository(self.pool)

    async def order(
        self,
        items: list[tuple[str, int, int]],
        *,
        tenders: list[tuple[TenderKind, int]] | None = None,
        status: OrderStatus = OrderStatus.PAID,
        capture: bool = True,
        shipping_fee: int = 3000,
        customer_id: str = "cust-1",
    ) -> str:
        """Create an order (a card pays it all unless ``tenders`` say else)."""
        self._orders += 1
        order_id = f"o{self._orders:03d}-{uuid.uuid4().hex[:4]}"
        total = sum(q * p for _, q, p in items) + shipping_fee
        paid = []
        for kind, amount in tenders or [(TenderKind.CARD, total)]:
            payment_id = None
            if kind is TenderKind.CARD:
                payment = await self.provider.create_payment(amount, "KRW", capture=capture)
                payment_id = str(payment["id"])
            paid.append((kind, amount, payment_id))
        doc = order_document(
            items,
            paid,
            customer_id=customer_id,
            currency="KRW",
            status=status,
            shipping_fee=shipping_fee,
        )
        await self.store.put_order(self.shop_id, order_id, doc)
        return order_id

    async def wait_job(
        self, bulk_id: str, done: Callable[[BulkJob], bool] | None = None, within: float = 60.0
    ) -> BulkJob:
        """Read the job from the store until ``done`` holds (default: it finished)."""
        done = done or (lambda job: job.status is not BulkStatus.RUNNING)
        deadline = asyncio.get_running_loop().time() + within
        while True:
            job = await self.bulk().get(self.shop_id, bulk_id)
            if done(job):
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not reached within {within}s: {job}")
            await asyncio.sleep(0.1)

    async def refund_entries(self, order_id: str) -> list[dict[str, Any]]:
        """The provider's refund and void movements of the order's card payments."""
        order = await self.store.get_order(self.shop_id, order_id)
        entries: list[dict[str, Any]] = []
        for tender in order.tenders:
            if tender.payment_id:
                payment = await self.provider.get_payment(tender.payment_id)
                entries += [e for e in payment["ledger"] if e["type"] in ("refund", "void")]
        return entries


@pytest_asyncio.fixture(loop_scope="session")
async def make_shop(
    pool: asyncpg.Pool, provider: PaymentProviderClient, dev_env: WorkflowEnvironment
) -> AsyncIterator[Callable[..., AbstractAsyncContextManager[Shop]]]:
    """Build a shop on the dev server; ``worker=False`` leaves its task queue unserved (a
    test then runs :func:`worker_process` on it)."""

    @asynccontextmanager
    async def build(*, worker: bool = True) -> AsyncIterator[Shop]:
        task_queue = f"bulk-test-{uuid.uuid4().hex}"
        store = StoreRepository(pool)
        client = CancellationClient(dev_env.client, store, task_queue=task_queue)
        workers = []
        if worker:
            workers = build_workers(
                dev_env.client,
                [StoreActivities(store), ProviderActivities(provider)],
                task_queue=task_queue,
            )
        for w in workers:
            await w.__aenter__()
        try:
            yield Shop(dev_env, client, provider, store, pool, task_queue)
        finally:
            for w in reversed(workers):
                await w.__aexit__(None, None, None)

    yield build


@pytest_asyncio.fixture(loop_scope="session")
async def shop(make_shop: Callable[..., AbstractAsyncContextManager[Shop]]) -> AsyncIterator[Shop]:
    """A shop served by a worker in this process."""
    async with make_shop() as value:
        yield value


class WorkerProcess:
    """``python worker.py`` serving one task queue, as operators run it; killable."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "worker.py",
            cwd=REPO_ROOT,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), WORKER_STARTUP_SECONDS)
        assert b"worker ready" in line, line

    async def kill(self) -> None:
        """SIGKILL: no graceful shutdown, activities and workflow tasks die mid-way."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            await self.kill()


@pytest_asyncio.fixture(loop_scope="session")
async def worker_process(
    database_url: str, provider_url: str, dev_env: WorkflowEnvironment
) -> AsyncIterator[Callable[[str], WorkerProcess]]:
    """Make worker processes for a task queue; every one is stopped after the test."""
    made: list[WorkerProcess] = []
    config = dev_env.client.service_client.config

    def make(task_queue: str) -> WorkerProcess:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": config.target_host,
            "TEMPORAL_NAMESPACE": "default",
            "TASK_QUEUE": task_queue,
            "PAYMENT_PROVIDER_URL": provider_url,
        }
        worker = WorkerProcess(env)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()
