"""Runs the ``OrderCancellation`` and ``BulkCancellation`` workflows and their activities.

``python worker.py`` reads the environment (see README "Configuration"), connects to
Temporal and the store database, and serves the task queue ``order-cancellations``
(and ``payment-provider`` when ``PROVIDER_TASK_QUEUE`` names it). SIGTERM or SIGINT
stop polling and let running activities finish first.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.bulk import BulkActivities
from activities.database import StoreRepository, apply_migrations, create_pool
from activities.provider import ProviderActivities
from activities.store import StoreActivities
from starter.client import CancellationClient, connect_temporal
from starter.config import DEFAULT_MAX_CACHED_WORKFLOWS, ConfigError, Settings
from starter.providers import provider_client
from workflows.bulk_cancellation import BulkCancellationWorkflow
from workflows.order_cancellation import OrderCancellationWorkflow

# In-flight activities get this long to finish after SIGTERM before they are cancelled.
GRACEFUL_SHUTDOWN = timedelta(seconds=20)

log = logging.getLogger("worker")

# The sandbox re-imports a workflow's module for every new run; ours keeps no module state
# and imports only pure code, so passing it through saves ~15 ms of worker CPU per run
# (docs/performance.md) while the sandbox still guards everything the module calls.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "domain")
)


@asynccontextmanager
async def activity_dependencies(settings: Settings) -> AsyncIterator[list[Any]]:
    """The activity classes with their pool and HTTP client, closed on exit."""
    pool = await create_pool(settings.require_database())
    provider = provider_client(settings)
    try:
        yield [
            StoreActivities(StoreRepository(pool)),
            ProviderActivities(provider, settings.provider_accounts),
        ]
    finally:
        await provider.aclose()
        await pool.close()


def metrics_runtime(port: int | None) -> Runtime | None:
    """A runtime that serves the SDK's Prometheus metrics on loopback, or ``None``."""
    if port is None:
        return None
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )


def build_workers(
    client: Client,
    activity_objects: Sequence[StoreActivities | ProviderActivities | BulkActivities],
    *,
    task_queue: str,
    provider_task_queue: str | None = None,
    max_cached_workflows: int = DEFAULT_MAX_CACHED_WORKFLOWS,
) -> list[Worker]:
    """One worker for workflows and store activities; provider calls on their own queue
    when one is named."""
    store, provider, *more = activity_objects
    assert isinstance(store, StoreActivities), "the store's activities come first"
    assert isinstance(provider, ProviderActivities), "the provider's activities second"
    # Bulk jobs start each order's cancellation through the client, on these same queues.
    given = more[0] if more else None
    assert given is None or isinstance(given, BulkActivities)
    bulk = given or bulk_activities(client, store, task_queue, provider_task_queue)
    # The SDK takes activities as plain callables.
    store_methods: list[Callable[..., Any]] = [store.open_cancellation, store.apply_changes]
    bulk_methods: list[Callable[..., Any]] = [
        bulk.register_bulk_job,
        bulk.start_bulk_orders,
        bulk.finish_bulk_job,
    ]
    provider_methods: list[Callable[..., Any]] = [
        provider.refund_payment,
        provider.await_refund_settlement,
        provider.check_recapture,
        provider.recapture_payment,
        provider.find_refund,
    ]
    main = Worker(
        client,
        task_queue=task_queue,
        workflows=[OrderCancellationWorkflow, BulkCancellationWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        max_cached_workflows=max_cached_workflows,
        activities=store_methods + bulk_methods + ([] if provider_task_queue else provider_methods),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    if not provider_task_queue or provider_task_queue == task_queue:
        return [main]
    payments = Worker(
        client,
        task_queue=provider_task_queue,
        activities=provider_methods,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    return [main, payments]


def bulk_activities(
    client: Client,
    store: StoreActivities,
    task_queue: str,
    provider_task_queue: str | None,
) -> BulkActivities:
    """The bulk job's activities over a client that starts cancellations like the hook does."""
    starter = CancellationClient(
        client, store.repository, task_queue=task_queue, provider_task_queue=provider_task_queue
    )
    return BulkActivities(starter)


async def main(settings: Settings | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = settings or Settings.from_env()
    database_url = settings.require_database()
    await apply_migrations(database_url)
    client = await connect_temporal(settings, runtime=metrics_runtime(settings.metrics_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with activity_dependencies(settings) as activity_objects:
        workers = build_workers(
            client,
            activity_objects,
            task_queue=settings.task_queue,
            provider_task_queue=settings.provider_task_queue,
            max_cached_workflows=settings.max_cached_workflows,
        )
        runs = [asyncio.create_task(w.run()) for w in workers]
        log.info(
            "worker serving %s on %s",
            ", ".join(w.task_queue for w in workers),
            settings.temporal_address,
        )
        print(f"worker ready on task queue {settings.task_queue}", flush=True)
        await stop.wait()
        log.info("shutting down: letting running activities finish")
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs, return_exceptions=True)


def run() -> int:
    """``python worker.py``: serve; a malformed setting exits 2 with its message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(main())
    except ConfigError as error:
        print(f"worker: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
