"""``python -m tools.bench``: what a cancellation costs, measured next to Temporal's own floor.

In one run, on the same kind of Temporal server started the same way (a fresh in-memory
``temporal server start-dev`` per measured batch, see :mod:`tools.bench_stack`):

1. **skeleton**: N bare workflows of the cancellation's shape (start, one update, three
   activities doing nothing, complete; :mod:`tools.bench_skeleton`) at concurrency C;
2. **product**: N full cancellations at the same concurrency: a customer's request, the
   merchant's acceptance through the Python client, one card refund through the provider
   sandbox, the order canceled in PostgreSQL; then the same with the acceptance sent through the
   admin hook (``product_http``), and a mix of card, card-plus-points and bank-deposit orders
   (``product_mix``; a bank deposit needs the merchant's ``confirm_refund``);
3. for each: throughput, latency percentiles from the acceptance to ``canceled`` (the skeleton:
   from its update to its completion), CPU seconds per run of the worker and of the server, and
   history events per run, counted in the histories themselves;
4. **low load**: both again at concurrency 1, for the latency target;
5. **idle footprint**: open runs waiting for the merchant (100, then 2,000; ``--idle-runs
   100,10000`` for the target's 10,000), and runs waiting out the undo window: the worker's RSS
   and the time it took to get them there;
6. **scale-out**: the product with one and with two worker processes.

``--bulk N`` runs another benchmark instead: one bulk cancellation job against N single
merchant starts (:mod:`tools.bench_bulk`).

It prints a table and the product/skeleton ratios; ``--json`` prints one JSON object instead.
Progress goes to stderr. See ``docs/performance.md`` for the figures of a run and what they mean.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.events import EventStore
from activities.provider_client import PaymentProviderClient
from domain.bank import BankAccount
from domain.cancellation import Channel, InitiatedBy, ReasonCode, RefundStatus
from domain.order import OrderDocument, OrderItem, OrderStatus
from domain.requests import AcceptRequest, ConfirmRefundRequest, StartRequest
from domain.shop import ShopSettings
from tools.bench_relay import RelayProbe
from tools.bench_skeleton import SKELETON_TASK_QUEUE, SkeletonWorkflow
from tools.bench_stack import (
    LIFTED_QUEUE_LIMITS,
    Batch,
    BenchStack,
    CpuUsage,
    gather_limited,
    http_client,
    run_reported,
)
from tools.demo import paid_tenders
from tools.situations import Situation, situation

__all__ = ["SkeletonWorkflow", "main", "run_bench"]

DEFAULT_N = 200
DEFAULT_CONCURRENCY = 10
DEFAULT_IDLE_RUNS = (100, 2_000)
"""Past the worker's workflow cache (1,000 runs) its memory stops growing with open runs, so
2,000 shows the plateau; 10,000 (``--idle-runs 100,10000``) adds about seven minutes here, the
product opening some 22 runs a second on two cores."""
DEFAULT_UNDO_IDLE_RUNS = (100, 1_500)
"""Each of these runs went through the whole cancellation first (about 10 a second here)."""
DEFAULT_LOW_LOAD_N = 30

WARMUP_RUNS = 5
"""Runs before the measurement starts, on the same server: the first runs of a fresh worker
pay for one-off imports and connections, which no steady state does."""
RUN_TIMEOUT_SECONDS = 120.0
HISTORY_SAMPLE = 100
"""Histories fetched per batch to count events (all of them when the batch is smaller)."""
CANCELED_POLL_SECONDS = 0.01
"""How often the bench asks the database which cancellations reached ``canceled``."""
SETTLE_SECONDS = 2.0
"""Quiet time before a worker's RSS is read: the last workflow tasks finish meanwhile."""
SETUP_CONCURRENCY = 16

TARGET_RATIO_THROUGHPUT = 0.7
TARGET_EXTRA_EVENTS = 14
TARGET_LOW_LOAD_P50_RATIO = 2.0
TARGET_IDLE_RSS_RATIO = 1.2
TARGET_SCALE_OUT = 1.6
TARGET_RELAY_P50_MS = 1000.0
TARGET_RELAY_THROUGHPUT = 0.95
"""With the relay on, the product keeps at least this share of its throughput without it."""
RELAY_EVENTS_PER_CARD_RUN = 4
"""requested, accepted, refund_succeeded, completed."""
RELAY_DRAIN_SECONDS = 60.0
SATURATED_MACHINE = 0.9
"""The machine counts as saturated when its cores were busy this much of the time."""
NOISY = 0.1
"""Unrelated processes taking more than this share of the CPU make the figures unreliable."""
SERVER_BOUND_SHARE = 0.5
"""On a saturated machine, the server is the bottleneck when it took this much of the CPU."""

ORDER_TOTAL = 30_000
CURRENCY = "KRW"
_BANK_ACCOUNT = BankAccount(bank="Bench Bank", account_number="110-000-000000", holder="Bench")

Kind = Literal["card", "card+points", "bank"]
MIX: Mapping[Kind | Literal["bank-idle"], Situation] = {
    "card": situation("card_request_accepted"),
    "card+points": situation("card_and_points_accepted"),
    "bank": situation("bank_transfer_confirmed"),
    "bank-idle": situation("bank_transfer_confirmed"),  # left requested: the idle footprint
}
"""The product mix's kinds (the report's names) and the catalog's situations they run: how
their orders are paid (:mod:`tools.situations`)."""
AcceptVia = Literal["client", "http"]


def log(message: str) -> None:
    """Progress for people, on stderr (stdout holds the table or the JSON)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- results ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Outcome:
    """One run: its kind and how long the acceptance took to become ``canceled``."""

    kind: str
    latency_s: float


@dataclass
class BatchResult:
    """What one measured batch did and cost."""

    name: str
    n: int
    concurrency: int
    workers: int
    outcomes: list[Outcome]
    errors: list[str]
    cpu: CpuUsage
    events_per_run: float = math.nan
    events_range: tuple[int, int] = (0, 0)
    events_by_type: dict[str, float] = field(default_factory=dict)
    latency_kind: str | None = None
    """Only runs of this kind count for the latency (the mix: card-only runs)."""
    worker_rss_mb: float = math.nan
    relay: dict[str, Any] | None = None
    """Webhook deliveries of the measured runs (batches run with the relay)."""

    @property
    def completed(self) -> int:
        """Runs that reached the end."""
        return len(self.outcomes)

    @property
    def throughput_per_s(self) -> float:
        """Completed runs per second of the measured window."""
        return self.completed / self.cpu.wall_s if self.cpu.wall_s > 0 else math.nan

    def latencies_ms(self, kind: str | None = None) -> list[float]:
        """Latencies in milliseconds, of one kind or of the batch's latency kind."""
        kind = kind or self.latency_kind
        return [o.latency_s * 1000 for o in self.outcomes if kind is None or o.kind == kind]

    def p(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.latencies_ms(), q)

    def cpu_per_run(self, *names: str) -> float:
        """CPU seconds per completed run of the processes named (prefixes match)."""
        if not self.completed:
            return math.nan
        used = sum(
            seconds
            for process, seconds in self.cpu.processes.items()
            if any(process == name or process.startswith(f"{name}-") for name in names)
        )
        return used / self.completed

    def summary(self) -> dict[str, Any]:
        """The JSON form."""
        kinds = sorted({o.kind for o in self.outcomes})
        machine_busy = (
            self.cpu.machine_busy_s / self.cpu.machine_total_s
            if self.cpu.machine_total_s
            else math.nan
        )
        return {
            "n": self.n,
            "concurrency": self.concurrency,
            "workers": self.workers,
            "completed": self.completed,
            "errors": len(self.errors),
            "wall_s": round(self.cpu.wall_s, 3),
            "throughput_per_s": _round(self.throughput_per_s, 2),
            "p50_ms": _round(self.p(50), 1),
            "p95_ms": _round(self.p(95), 1),
            "p99_ms": _round(self.p(99), 1),
            "latency_of": self.latency_kind or "all runs",
            "latency_p50_ms_by_kind": {
                kind: _round(percentile(self.latencies_ms(kind), 50), 1) for kind in kinds
            },
            "events_per_run": _round(self.events_per_run, 1),
            "events_min_max": list(self.events_range),
            "events_by_type": {k: _round(v, 2) for k, v in sorted(self.events_by_type.items())},
            "worker_cpu_s_per_run": _round(self.cpu_per_run("worker"), 4),
            "server_cpu_s_per_run": _round(self.cpu_per_run("server"), 4),
            "cpu_s_per_run": {
                name: _round(seconds / self.completed, 4) if self.completed else None
                for name, seconds in sorted(self.cpu.processes.items())
            },
            "cores_busy": {
                name: _round(self.cpu.cores(name), 2) for name in sorted(self.cpu.processes)
            },
            "machine_busy": _round(machine_busy, 3),
            "other_processes_cpu_s": _round(self.cpu.others_s, 2),
            "worker_rss_mb": _round(self.worker_rss_mb, 1),
            "first_errors": self.errors[:3],
            **({"relay": self.relay} if self.relay is not None else {}),
        }


def _round(value: float, digits: int) -> float | None:
    """Rounded, or None for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, digits)


@dataclass
class IdleStep:
    """The footprint with ``open_runs`` runs open in one state."""

    open_runs: int
    added: int
    start_s: float
    worker_rss_mb: float
    server_rss_mb: float
    worker_cpu_s: float
    server_cpu_s: float

    def summary(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "open_runs": self.open_runs,
            "added": self.added,
            "start_s": round(self.start_s, 2),
            "started_per_s": round(self.added / self.start_s, 1) if self.start_s else None,
            "worker_rss_mb": round(self.worker_rss_mb, 1),
            "server_rss_mb": round(self.server_rss_mb, 1),
            "worker_cpu_s_per_run": round(self.worker_cpu_s / self.added, 4),
            "server_cpu_s_per_run": round(self.server_cpu_s / self.added, 4),
        }


@dataclass
class IdleResult:
    """Worker memory as open runs pile up in one state."""

    state: str
    baseline_rss_mb: float
    steps: list[IdleStep]

    @property
    def rss_ratio(self) -> float:
        """RSS with the most open runs over RSS with the fewest."""
        if len(self.steps) < 2:
            return math.nan
        return self.steps[-1].worker_rss_mb / self.steps[0].worker_rss_mb

    def summary(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "state": self.state,
            "worker_rss_mb_before_any_run": round(self.baseline_rss_mb, 1),
            "steps": [step.summary() for step in self.steps],
            "rss_ratio_largest_to_smallest": _round(self.rss_ratio, 3),
        }


# -- workloads -------------------------------------------------------------------------------


class CanceledWatcher:
    """Tells when cancellations reach ``canceled`` in the store, by polling it cheaply.

    One query every :data:`CANCELED_POLL_SECONDS` for everything awaited, against PostgreSQL:
    asking the workflows (the ``status`` query) would cost the worker and the server the very
    CPU the benchmark measures.
    """

    def __init__(self, batch: Batch) -> None:
        self._pool = batch.pool
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CanceledWatcher:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def canceled(self, cancellation_id: str) -> float:
        """Wait until the cancellation is ``canceled``; the ``perf_counter`` time it was seen."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[cancellation_id] = future
        self._wake.set()
        return await future

    async def _poll(self) -> None:
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            rows = await self._pool.fetch(
                "SELECT cancellation_id FROM cancellations"
                " WHERE cancellation_id = ANY($1::text[]) AND status = 'canceled'",
                list(self._waiting),
            )
            seen = time.perf_counter()
            for row in rows:
                future = self._waiting.pop(row["cancellation_id"], None)
                if future is not None and not future.done():
                    future.set_result(seen)
            await asyncio.sleep(CANCELED_POLL_SECONDS)


async def make_orders(
    batch: Batch,
    provider: PaymentProviderClient,
    prefix: str,
    kinds: Sequence[Kind | Literal["bank-idle"]],
) -> list[str]:
    """Create one paid order per kind (card tenders get a real captured sandbox payment)."""
    store = batch.client.store
    await store.put_settings(batch.shop_id, ShopSettings())
    order_ids = [f"{prefix}-{n}" for n in range(len(kinds))]

    async def one(n: int) -> None:
        kind = kinds[n]
        doc_tenders = await paid_tenders(
            provider,
            MIX[kind].tenders,
            ORDER_TOTAL,
            idempotency_key=lambda _: f"bench-{uuid.uuid4().hex}",
        )
        # Many SKUs, as in a real shop: a single hot stock row would measure lock waits.
        sku = n % 50
        doc = OrderDocument(
            customer_id=f"cust-{prefix}-{n}",
            currency=CURRENCY,
            status=OrderStatus.PAID,
            shipping_fee=3_000,
            items=[
                OrderItem(item_id="i1", sku=f"sku-mug-{sku}", quantity=2, unit_price=10_000),
                OrderItem(item_id="i2", sku=f"sku-tee-{sku}", quantity=1, unit_price=7_000),
            ],
            tenders=doc_tenders,
        )
        await store.put_order(batch.shop_id, order_ids[n], doc)

    await gather_limited(
        SETUP_CONCURRENCY,
        [functools.partial(one, n) for n in range(len(kinds))],
    )
    return order_ids


@dataclass
class Workload:
    """What one batch runs: the skeleton, or the product with a way to accept."""

    skeleton: bool = False
    accept_via: AcceptVia = "client"
    kinds: tuple[Kind, ...] = ("card",)
    """Order kinds, round robin."""

    def kind(self, n: int) -> Kind:
        """The kind of the ``n``-th run."""
        return self.kinds[n % len(self.kinds)]


@dataclass
class _Runner:
    """Runs a workload's units inside one batch."""

    batch: Batch
    workload: Workload
    provider: PaymentProviderClient
    http: httpx.AsyncClient | None
    watcher: CanceledWatcher
    orders: dict[str, str] = field(default_factory=dict)
    """Run id → order id (the product)."""
    workflow_ids: dict[str, str] = field(default_factory=dict)
    """Run id → workflow id, once started."""

    async def prepare(self, prefix: str, count: int) -> list[str]:
        """Make ``count`` runs ready to go; their ids."""
        ids = [f"{prefix}-{n}" for n in range(count)]
        if self.workload.skeleton:
            return ids
        kinds = [self.workload.kind(n) for n in range(count)]
        order_ids = await make_orders(self.batch, self.provider, prefix, kinds)
        self.orders.update(zip(ids, order_ids, strict=True))
        return ids

    async def run(self, run_id: str, n: int) -> Outcome:
        """One run, start to end; its latency from acceptance to done."""
        if self.workload.skeleton:
            return await self._skeleton(run_id)
        return await self._product(run_id, self.workload.kind(n))

    async def _skeleton(self, run_id: str) -> Outcome:
        temporal = self.batch.client.temporal
        handle = await temporal.start_workflow(
            SkeletonWorkflow.run, id=run_id, task_queue=SKELETON_TASK_QUEUE
        )
        self.workflow_ids[run_id] = run_id
        began = time.perf_counter()
        # Answers when the activities are done; the run completes in that same workflow task.
        await handle.execute_update(SkeletonWorkflow.accept)
        return Outcome("skeleton", time.perf_counter() - began)

    async def _product(self, run_id: str, kind: Kind) -> Outcome:
        client = self.batch.client
        shop_id = self.batch.shop_id
        order_id = self.orders[run_id]
        view, _ = await client.start_cancellation(
            shop_id,
            order_id,
            StartRequest(
                initiated_by=InitiatedBy.CUSTOMER,
                channel=Channel.MY_ACCOUNT,
                reason_code=ReasonCode.CHANGED_MIND,
            ),
        )
        self.workflow_ids[run_id] = view.cancellation_id
        accept = AcceptRequest(
            reason_code=ReasonCode.CHANGED_MIND,
            bank_account=_BANK_ACCOUNT if MIX[kind].pays_with("bank_transfer") else None,
        )
        began = time.perf_counter()
        if self.workload.accept_via == "http":
            await self._accept_over_http(shop_id, order_id, view.cancellation_id, accept)
        else:
            view = await client.accept(shop_id, order_id, accept)
            for line in view.refunds:
                if line.status is RefundStatus.AWAITING_CONFIRMATION:
                    # The merchant made the transfer and says so, as soon as they can.
                    await client.confirm_refund(
                        shop_id,
                        order_id,
                        line.refund_id,
                        ConfirmRefundRequest(reference=f"transfer-{run_id}"),
                    )
        seen = await self.watcher.canceled(view.cancellation_id)
        return Outcome(kind, seen - began)

    async def _accept_over_http(
        self, shop_id: str, order_id: str, cancellation_id: str, accept: AcceptRequest
    ) -> None:
        assert self.http is not None and self.batch.hook_url is not None
        response = await self.http.post(
            f"{self.batch.hook_url}/v1/shops/{shop_id}/orders/{order_id}/cancellation/accept",
            content=accept.model_dump_json(exclude_none=True),
            headers={
                "Authorization": f"Bearer {self.batch.hook_token}",
                "Content-Type": "application/json",
                # As merchants are told to call it: a retried request then acts once.
                "Idempotency-Key": f"accept-{cancellation_id}",
            },
        )
        if response.status_code != 200:
            raise RuntimeError(f"accept over HTTP: {response.status_code} {response.text[:300]}")


async def _drive(
    ids: Sequence[str], concurrency: int, run: Callable[[str, int], Awaitable[Outcome]]
) -> tuple[dict[str, Outcome], dict[str, str]]:
    """Run every id through ``run`` with ``concurrency`` lanes; outcomes and errors by id."""
    outcomes: dict[str, Outcome] = {}
    errors: dict[str, str] = {}

    async def one(n: int) -> None:
        try:
            async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
                outcomes[ids[n]] = await run(ids[n], n)
        except Exception as error:  # a failed run is counted and reported, not fatal
            errors[ids[n]] = f"{ids[n]}: {type(error).__name__}: {error}"[:500]

    await gather_limited(concurrency, [functools.partial(one, n) for n in range(len(ids))])
    return outcomes, errors


@dataclass(frozen=True)
class EventCount:
    """History events per run over a sample of runs."""

    mean: float
    least: int
    most: int
    by_type: dict[str, float]


async def count_events(temporal: Client, workflow_ids: Sequence[str]) -> EventCount:
    """Mean history events per run, and per event type, over (a sample of) the runs."""
    if not workflow_ids:
        return EventCount(math.nan, 0, 0, {})
    step = max(1, len(workflow_ids) // HISTORY_SAMPLE)
    sample = list(workflow_ids)[::step][:HISTORY_SAMPLE]
    by_type: collections.Counter[str] = collections.Counter()
    totals: list[int] = []

    async def one(workflow_id: str) -> None:
        handle = temporal.get_workflow_handle(workflow_id)
        for _ in range(50):
            history = await handle.fetch_history()
            last = history.events[-1].event_type if history.events else None
            # At rest: no workflow task in flight (the product's last task starts its timer).
            if last not in (
                EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
                EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            ):
                break
            await asyncio.sleep(0.1)
        totals.append(len(history.events))
        by_type.update(_event_name(event.event_type) for event in history.events)

    await gather_limited(8, [functools.partial(one, w) for w in sample])
    runs = len(totals)
    return EventCount(
        mean=sum(totals) / runs,
        least=min(totals),
        most=max(totals),
        by_type={name: count / runs for name, count in by_type.items()},
    )


def _event_name(event_type: int) -> str:
    name = EventType.Name(EventType.ValueType(event_type)).removeprefix("EVENT_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


# -- the batches -----------------------------------------------------------------------------


@dataclass
class Bench:
    """One benchmark run's options and shared parts."""

    stack: BenchStack
    provider: PaymentProviderClient
    n: int
    concurrency: int

    async def measure(
        self,
        name: str,
        workload: Workload,
        *,
        n: int | None = None,
        concurrency: int | None = None,
        workers: int = 1,
        latency_kind: str | None = None,
        relay: bool = False,
    ) -> BatchResult:
        """One measured batch on a fresh server: warm up, then N runs at concurrency C.

        With ``relay`` a webhook relay runs beside the worker, and a receiver in this process
        takes every event of the batch's shop.
        """
        n = self.n if n is None else n
        concurrency = self.concurrency if concurrency is None else concurrency
        log(f"{name}: {n} runs at concurrency {concurrency}, {workers} worker process(es)")
        async with (
            self.stack.batch(
                name,
                skeleton=workload.skeleton,
                workers=workers,
                hook=workload.accept_via == "http",
                relay=relay,
            ) as batch,
            CanceledWatcher(batch) as watcher,
            contextlib.AsyncExitStack() as extras,
        ):
            probe = await extras.enter_async_context(RelayProbe()) if relay else None
            if probe is not None:
                await EventStore(batch.pool).put_endpoint(
                    batch.shop_id, "bench", probe.url, ["cancellation.*"]
                )
            http = http_client(concurrency) if workload.accept_via == "http" else None
            try:
                runner = _Runner(batch, workload, self.provider, http, watcher)
                warmup = await runner.prepare(f"{name}-warmup", WARMUP_RUNS)
                ids = await runner.prepare(name, n)
                _, warmup_errors = await _drive(warmup, concurrency, runner.run)
                if warmup_errors:
                    first = next(iter(warmup_errors.values()))
                    raise RuntimeError(f"{name}: the warm-up failed: {first}")
                before = batch.meter.sample()
                outcomes, errors = await _drive(ids, concurrency, runner.run)
                after = batch.meter.sample()
            finally:
                if http is not None:
                    await http.aclose()
            result = BatchResult(
                name=name,
                n=n,
                concurrency=concurrency,
                workers=workers,
                outcomes=list(outcomes.values()),
                errors=list(errors.values()),
                cpu=batch.meter.usage(before, after),
                latency_kind=latency_kind,
                worker_rss_mb=batch.worker_rss() / 2**20,
            )
            if errors:
                log(f"{name}: {len(errors)} run(s) failed, e.g. {result.errors[0]}")
            workflow_ids = [runner.workflow_ids[run_id] for run_id in ids if run_id in outcomes]
            events = await count_events(batch.client.temporal, workflow_ids)
            result.events_per_run = events.mean
            result.events_range = (events.least, events.most)
            result.events_by_type = events.by_type
            if probe is not None:
                measured = set(workflow_ids)
                expected = RELAY_EVENTS_PER_CARD_RUN * len(measured)
                if not await probe.wait_for(measured, expected, RELAY_DRAIN_SECONDS):
                    log(f"{name}: not every event arrived within {RELAY_DRAIN_SECONDS:.0f} s")
                result.relay = probe.summary(measured, expected, percentile)
        log(
            f"{name}: {result.throughput_per_s:.1f}/s, p50 {result.p(50):.0f} ms, "
            f"{result.events_per_run:.0f} events/run"
        )
        return result

    async def idle(
        self, state: Literal["requested", "undo_window"], sizes: Sequence[int]
    ) -> IdleResult:
        """Open runs pile up in one state; the worker's RSS after each size is reached."""
        log(f"idle footprint, runs waiting {_STATE_WORDS[state]}: {', '.join(map(str, sizes))}")
        async with self.stack.batch(f"idle-{state}") as batch, CanceledWatcher(batch) as watcher:
            await asyncio.sleep(SETTLE_SECONDS)
            baseline = batch.worker_rss() / 2**20
            kind: Literal["bank-idle", "card"] = "bank-idle" if state == "requested" else "card"
            order_ids = await make_orders(batch, self.provider, "idle", [kind] * max(sizes))
            steps: list[IdleStep] = []
            opened = 0
            for size in sizes:
                todo = order_ids[opened:size]
                before = batch.meter.sample()
                began = time.perf_counter()
                await gather_limited(
                    self.concurrency,
                    [
                        functools.partial(_open_run, batch, watcher, state, order_id)
                        for order_id in todo
                    ],
                )
                elapsed = time.perf_counter() - began
                await asyncio.sleep(SETTLE_SECONDS)
                usage = batch.meter.usage(before, batch.meter.sample())
                opened = size
                step = IdleStep(
                    open_runs=size,
                    added=len(todo),
                    start_s=elapsed,
                    worker_rss_mb=batch.worker_rss() / 2**20,
                    server_rss_mb=batch.server_rss() / 2**20,
                    worker_cpu_s=usage.processes.get("worker", 0.0),
                    server_cpu_s=usage.processes.get("server", 0.0),
                )
                steps.append(step)
                log(
                    f"idle {state}: {size} open, {len(todo)} added in {elapsed:.1f} s, "
                    f"worker RSS {step.worker_rss_mb:.0f} MB"
                )
        return IdleResult(state=state, baseline_rss_mb=baseline, steps=steps)


_STATE_WORDS = {"requested": "for the merchant", "undo_window": "out the undo window"}


async def _open_run(batch: Batch, watcher: CanceledWatcher, state: str, order_id: str) -> None:
    """A customer's request (waits for the merchant), or a merchant's cancellation that
    goes all the way to ``canceled`` (waits out the undo window)."""
    if state == "requested":
        await batch.client.start_cancellation(
            batch.shop_id,
            order_id,
            StartRequest(
                initiated_by=InitiatedBy.CUSTOMER,
                channel=Channel.MY_ACCOUNT,
                reason_code=ReasonCode.CHANGED_MIND,
            ),
        )
        return
    view, _ = await batch.client.start_cancellation(
        batch.shop_id,
        order_id,
        StartRequest(
            initiated_by=InitiatedBy.MERCHANT,
            channel=Channel.ADMIN,
            reason_code=ReasonCode.SOLD_OUT,
            accept=AcceptRequest(reason_code=ReasonCode.SOLD_OUT),
        ),
    )
    await watcher.canceled(view.cancellation_id)


# -- the whole run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to run, from the command line."""

    n: int = DEFAULT_N
    concurrency: int = DEFAULT_CONCURRENCY
    json: bool = False
    idle_runs: tuple[int, ...] = DEFAULT_IDLE_RUNS
    undo_idle_runs: tuple[int, ...] = DEFAULT_UNDO_IDLE_RUNS
    low_load_n: int = DEFAULT_LOW_LOAD_N
    skip_idle: bool = False
    skip_scale_out: bool = False
    skip_http: bool = False
    skip_mix: bool = False
    skip_relay: bool = False
    durable_db: bool = False
    stock_server: bool = False
    keep: Path | None = None


async def run_bench(options: Options) -> dict[str, Any]:
    """Run every section; the report as one JSON-ready dict."""
    began = time.perf_counter()
    work_dir = options.keep or Path(tempfile.mkdtemp(prefix="bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    # As root, PostgreSQL runs as another user, who must be able to enter the folder.
    work_dir.chmod(0o755)
    stack = BenchStack(
        work_dir, durable_db=options.durable_db, stock_server=options.stock_server, log=log
    )
    report: dict[str, Any] = {}
    log(f"scratch folder {work_dir}")
    try:
        await stack.start()
        provider = PaymentProviderClient(stack.sandbox_url)
        try:
            bench = Bench(stack, provider, options.n, options.concurrency)
            report = await _sections(bench, options)
        finally:
            await provider.aclose()
    finally:
        await asyncio.to_thread(stack.stop)
        if options.keep is None:
            stack.remove_work_dir()
    report["duration_s"] = round(time.perf_counter() - began, 1)
    return report


async def _sections(bench: Bench, options: Options) -> dict[str, Any]:
    skeleton = await bench.measure("skeleton", Workload(skeleton=True))
    product = await bench.measure("product", Workload())
    low_n = min(options.low_load_n, options.n)
    skeleton_c1 = await bench.measure(
        "skeleton-c1", Workload(skeleton=True), n=low_n, concurrency=1
    )
    product_c1 = await bench.measure("product-c1", Workload(), n=low_n, concurrency=1)
    report: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "n": options.n,
            "concurrency": options.concurrency,
            "low_load_n": low_n,
            "warmup_runs": WARMUP_RUNS,
            "durable_db": options.durable_db,
            "server": "temporal server start-dev, in memory, fresh for every batch",
            "server_dynamic_config": [] if options.stock_server else list(LIFTED_QUEUE_LIMITS),
        },
        "skeleton": skeleton.summary(),
        "product": product.summary(),
        "ratio_throughput": _round(product.throughput_per_s / skeleton.throughput_per_s, 3),
        "ratios": _ratios(product, skeleton),
        "events_extra_by_type": {
            name: round(product.events_by_type.get(name, 0.0) - count, 2)
            for name, count in sorted(
                {**dict.fromkeys(product.events_by_type, 0.0), **skeleton.events_by_type}.items()
            )
            if abs(product.events_by_type.get(name, 0.0) - count) >= 0.01
        },
        "low_load": {
            "skeleton": skeleton_c1.summary(),
            "product": product_c1.summary(),
            "ratio_p50": _round(product_c1.p(50) / skeleton_c1.p(50), 3),
        },
    }
    measured = [skeleton, product, skeleton_c1, product_c1]
    if not options.skip_http:
        http = await bench.measure("product-http", Workload(accept_via="http"))
        report["product_http"] = http.summary()
        measured.append(http)
    if not options.skip_mix:
        mix = await bench.measure(
            "product-mix", Workload(kinds=("card", "card+points", "bank")), latency_kind="card"
        )
        report["product_mix"] = mix.summary()
        measured.append(mix)
    relayed: BatchResult | None = None
    if not options.skip_relay:
        # Right after the product without it, so the two compare as closely as they can.
        relayed = await bench.measure("product-relay", Workload(), relay=True)
        report["product_relay"] = relayed.summary()
        report["relay"] = _relay(product, relayed)
        measured.append(relayed)
    scale: dict[str, Any] | None = None
    if not options.skip_scale_out:
        # Its own one-worker batch right before the two-worker one: compared minutes apart,
        # a change in what else the machine runs would pass for scaling.
        one = await bench.measure("product-1-worker", Workload())
        two = await bench.measure("product-2-workers", Workload(), workers=2)
        scale = _scale_out(one, two)
        report["scale_out"] = scale
        measured += [one, two]
    idle: dict[str, IdleResult] = {}
    if not options.skip_idle:
        idle["requested"] = await bench.idle("requested", options.idle_runs)
        idle["undo_window"] = await bench.idle("undo_window", options.undo_idle_runs)
        report["idle"] = {state: result.summary() for state, result in idle.items()}
    report["targets"] = _targets(product, skeleton, product_c1, skeleton_c1, idle, scale, relayed)
    batches = [r for r in measured if r.cpu.machine_total_s]
    report["noise_max"] = round(
        max(r.cpu.others_s / r.cpu.machine_total_s for r in batches) if batches else 0.0, 3
    )
    if report["noise_max"] > NOISY:
        log(
            f"warning: unrelated processes took up to {report['noise_max']:.0%} of the CPU "
            "while batches were measured; run again on a quiet machine"
        )
    return report


def _relay(product: BatchResult, relayed: BatchResult) -> dict[str, Any]:
    """The relay's figures, and what running it cost the product."""
    figures = dict(relayed.relay or {})
    figures["product_throughput_ratio"] = _round(
        relayed.throughput_per_s / product.throughput_per_s, 3
    )
    figures["history_events_per_run"] = _round(relayed.events_per_run, 1)
    figures["history_events_per_run_without"] = _round(product.events_per_run, 1)
    return figures


def _ratios(product: BatchResult, skeleton: BatchResult) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return _round(a / b, 3) if b else None

    return {
        "throughput": ratio(product.throughput_per_s, skeleton.throughput_per_s),
        "p50": ratio(product.p(50), skeleton.p(50)),
        "p95": ratio(product.p(95), skeleton.p(95)),
        "p99": ratio(product.p(99), skeleton.p(99)),
        "events_per_run": ratio(product.events_per_run, skeleton.events_per_run),
        "worker_cpu_per_run": ratio(product.cpu_per_run("worker"), skeleton.cpu_per_run("worker")),
        "server_cpu_per_run": ratio(product.cpu_per_run("server"), skeleton.cpu_per_run("server")),
    }


def _scale_out(one: BatchResult, two: BatchResult) -> dict[str, Any]:
    """One against two worker processes, and what held the two back."""
    speedup = two.throughput_per_s / one.throughput_per_s
    usage = two.cpu
    busy = usage.machine_busy_s / usage.machine_total_s if usage.machine_total_s else math.nan
    spent = usage.machine_busy_s or math.nan
    shares = {
        "server": usage.processes.get("server", 0.0) / spent,
        "workers": sum(s for n, s in usage.processes.items() if n.startswith("worker")) / spent,
        "postgres + sandbox": (
            usage.processes.get("postgres", 0.0) + usage.processes.get("sandbox", 0.0)
        )
        / spent,
        "load generator (bench)": usage.processes.get("bench", 0.0) / spent,
        "other processes": usage.others_s / spent,
    }
    worker_cores = max(usage.cores(n) for n in usage.processes if n.startswith("worker"))
    if busy < SATURATED_MACHINE:
        bottleneck = "none: the machine was not saturated"
    elif shares["server"] >= SERVER_BOUND_SHARE:
        bottleneck = "server"
    else:
        bottleneck = "the machine's CPU, shared by the server, the workers and the rest"
    verdict = (
        f"the {os.cpu_count()} cores were {busy:.0%} busy; the server used "
        f"{usage.cores('server'):.2f} cores ({shares['server']:.0%} of the CPU spent), each "
        f"worker at most {worker_cores:.2f}; bottleneck: {bottleneck}"
    )
    return {
        "one_worker": one.summary(),
        "two_workers": two.summary(),
        "speedup": _round(speedup, 3),
        "machine_busy": _round(busy, 3),
        "cpu_share": {name: round(value, 3) for name, value in shares.items()},
        "server_bound": bottleneck == "server",
        "bottleneck": bottleneck,
        "verdict": verdict,
    }


def _targets(
    product: BatchResult,
    skeleton: BatchResult,
    product_c1: BatchResult,
    skeleton_c1: BatchResult,
    idle: dict[str, IdleResult],
    scale: dict[str, Any] | None,
    relayed: BatchResult | None = None,
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def target(name: str, goal: str, measured: float, met: bool | None, note: str = "") -> None:
        targets.append(
            {
                "target": name,
                "goal": goal,
                "measured": _round(measured, 3),
                "met": met,
                "note": note,
            }
        )

    ratio = product.throughput_per_s / skeleton.throughput_per_s
    target(
        "throughput",
        f"product ≥ {TARGET_RATIO_THROUGHPUT}× skeleton",
        ratio,
        ratio >= TARGET_RATIO_THROUGHPUT,
    )
    # The skeleton's count depends on whether its update rode on its first workflow task (the
    # fewest events) or came after it, as the merchant's acceptance always does: judge against
    # the fewest, the strictest floor.
    floor = skeleton.events_range[0] or skeleton.events_per_run
    extra = product.events_per_run - floor
    target(
        "history events",
        f"happy path ≤ skeleton + {TARGET_EXTRA_EVENTS}",
        extra,
        extra <= TARGET_EXTRA_EVENTS,
        f"{product.events_per_run:.1f} vs the skeleton's {floor} "
        f"({skeleton.events_range[0]}–{skeleton.events_range[1]}, mean "
        f"{skeleton.events_per_run:.1f})",
    )
    p50_ratio = product_c1.p(50) / skeleton_c1.p(50)
    target(
        "latency at C=1",
        f"p50 accept→canceled ≤ {TARGET_LOW_LOAD_P50_RATIO}× skeleton's update→done",
        p50_ratio,
        p50_ratio <= TARGET_LOW_LOAD_P50_RATIO,
        f"{product_c1.p(50):.0f} ms vs {skeleton_c1.p(50):.0f} ms",
    )
    for state, result in idle.items():
        if len(result.steps) >= 2:
            first, last = result.steps[0], result.steps[-1]
            target(
                f"idle RSS ({state})",
                f"worker RSS at {last.open_runs} ≤ {TARGET_IDLE_RSS_RATIO}× at {first.open_runs}",
                result.rss_ratio,
                result.rss_ratio <= TARGET_IDLE_RSS_RATIO,
                f"{last.worker_rss_mb:.0f} MB vs {first.worker_rss_mb:.0f} MB",
            )
    if scale is not None and scale["speedup"] is not None:
        speedup = float(scale["speedup"])
        met: bool | None = speedup >= TARGET_SCALE_OUT
        note = scale["verdict"]
        if not met and scale["server_bound"]:
            met = None  # the target applies only where the server is not the bottleneck
            note = "not applicable: the server was the bottleneck; " + note
        target("scale-out", f"two workers ≥ {TARGET_SCALE_OUT}× one", speedup, met, note)
    if relayed is not None and relayed.relay is not None:
        p50 = relayed.relay.get("latency_p50_ms")
        target(
            "relay latency",
            f"p50 transition→receipt ≤ {TARGET_RELAY_P50_MS:.0f} ms",
            math.nan if p50 is None else float(p50),
            None if p50 is None else float(p50) <= TARGET_RELAY_P50_MS,
            f"{relayed.relay['events_delivered']} of {relayed.relay['events_expected']} events,"
            f" {relayed.relay['events_per_s']} a second",
        )
        kept = relayed.throughput_per_s / product.throughput_per_s
        target(
            "relay cost",
            f"product with the relay ≥ {TARGET_RELAY_THROUGHPUT}× without; history events equal",
            kept,
            kept >= TARGET_RELAY_THROUGHPUT
            and relayed.events_per_run <= product.events_per_run + 0.05,
            f"{relayed.events_per_run:.1f} vs {product.events_per_run:.1f} events per run",
        )
    return targets


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration):
        memory_kb = 0
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_end": [round(x, 2) for x in load],
    }


# -- the table -------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    """The report as a plain-text table for people."""
    lines: list[str] = []
    config = report["config"]
    cpus = report["machine"]
    lines.append(
        f"N={config['n']}  C={config['concurrency']}  low load N={config['low_load_n']}  "
        f"machine: {cpus['cpus']} × {cpus['cpu_model']}, {cpus['memory_gb']} GB  "
        f"({report.get('duration_s', '?')} s in all)"
    )
    lines.append("")
    header = (
        f"{'batch':<22}{'C':>4}{'runs/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'events':>8}{'worker':>9}{'server':>9}{'rest':>9}{'busy':>6}{'noise':>7}"
    )
    lines.append(header)
    lines.append(
        f"{'':<22}{'':>4}{'':>9}{'':>9}{'':>9}{'':>9}{'/run':>8}"
        f"{'ms/run':>9}{'ms/run':>9}{'ms/run':>9}{'':>6}{'':>7}"
    )
    rows: list[tuple[str, dict[str, Any]]] = [
        ("skeleton", report["skeleton"]),
        ("product", report["product"]),
    ]
    if "product_http" in report:
        rows.append(("product, HTTP accept", report["product_http"]))
    if "product_mix" in report:
        rows.append(("product, mix (card p)", report["product_mix"]))
    rows.append(("skeleton, low load", report["low_load"]["skeleton"]))
    rows.append(("product, low load", report["low_load"]["product"]))
    if "product_relay" in report:
        rows.append(("product, relay on", report["product_relay"]))
    if "scale_out" in report:
        rows.append(("product, 1 worker", report["scale_out"]["one_worker"]))
        rows.append(("product, 2 workers", report["scale_out"]["two_workers"]))
    for label, row in rows:
        lines.append(_row(label, row, cpus["cpus"] or 1))
    ratios = report["ratios"]
    lines.append("")
    lines.append(
        "product/skeleton:  throughput "
        f"{_fmt(ratios['throughput'], 'x')}  p50 {_fmt(ratios['p50'], 'x')}  "
        f"p95 {_fmt(ratios['p95'], 'x')}  p99 {_fmt(ratios['p99'], 'x')}  "
        f"events {_fmt(ratios['events_per_run'], 'x')}  worker CPU "
        f"{_fmt(ratios['worker_cpu_per_run'], 'x')}  server CPU "
        f"{_fmt(ratios['server_cpu_per_run'], 'x')}  |  low-load p50 "
        f"{_fmt(report['low_load']['ratio_p50'], 'x')}"
    )
    extra = report.get("events_extra_by_type", {})
    if extra:
        lines.append(
            "history events, product − skeleton: "
            + ", ".join(f"{name} {count:+g}" for name, count in extra.items())
        )
    if "relay" in report:
        relay = report["relay"]
        lines.append(
            f"relay: {relay['events_delivered']}/{relay['events_expected']} events delivered,"
            f" {relay['events_per_s']}/s; transition→receipt p50 {relay['latency_p50_ms']} ms,"
            f" p95 {relay['latency_p95_ms']} ms; product with relay / without: throughput"
            f" {_fmt(relay['product_throughput_ratio'], 'x')}, history events"
            f" {relay['history_events_per_run']} vs {relay['history_events_per_run_without']}"
        )
    if "product_mix" in report:
        by_kind = report["product_mix"]["latency_p50_ms_by_kind"]
        lines.append("mix p50 by kind (ms): " + ", ".join(f"{k} {v}" for k, v in by_kind.items()))
    if "scale_out" in report:
        scale = report["scale_out"]
        lines.append("")
        lines.append(
            f"scale-out: 2 workers / 1 = {_fmt(scale['speedup'], 'x')}; {scale['verdict']}"
        )
        lines.append(
            "  CPU share with 2 workers: "
            + ", ".join(f"{k} {v:.0%}" for k, v in scale["cpu_share"].items())
        )
    if "idle" in report:
        lines.append("")
        lines.append(
            f"{'idle runs waiting':<26}{'open':>8}{'added':>8}{'start s':>9}{'per s':>8}"
            f"{'worker MB':>11}{'server MB':>11}"
        )
        for state, idle in report["idle"].items():
            words = "for the merchant" if state == "requested" else "out the undo window"
            lines.append(
                f"{words:<26}{'0':>8}{'':>8}{'':>9}{'':>8}"
                f"{idle['worker_rss_mb_before_any_run']:>11.0f}{'':>11}"
            )
            for step in idle["steps"]:
                lines.append(
                    f"{'':<26}{step['open_runs']:>8}{step['added']:>8}{step['start_s']:>9.1f}"
                    f"{step['started_per_s'] or 0:>8.1f}{step['worker_rss_mb']:>11.0f}"
                    f"{step['server_rss_mb']:>11.0f}"
                )
    if report.get("noise_max", 0) > NOISY:
        lines.append("")
        lines.append(
            f"WARNING: unrelated processes took up to {report['noise_max']:.0%} of the CPU during "
            "the measurements; these figures are not clean"
        )
    lines.append("")
    lines.append("targets:")
    for target in report["targets"]:
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[target["met"]]
        note = f"  ({target['note']})" if target["note"] else ""
        lines.append(
            f"  {mark} {target['target']}: {target['goal']}; measured {target['measured']}{note}"
        )
    return "\n".join(lines)


def _row(label: str, row: dict[str, Any], cpus: int) -> str:
    """One batch; ``rest`` is the database, sandbox, hook and load generator together, ``busy``
    how busy the machine's cores were, ``noise`` the share of them unrelated processes took."""
    per_run = row["cpu_s_per_run"]
    noise = row["other_processes_cpu_s"] / (row["wall_s"] * cpus) if row["wall_s"] else None
    others = sum(
        v
        for k, v in per_run.items()
        if v is not None and k != "server" and not k.startswith("worker")
    )
    return (
        f"{label:<22}{row['concurrency']:>4}{_num(row['throughput_per_s'], 9, 1)}"
        f"{_num(row['p50_ms'], 9, 0)}{_num(row['p95_ms'], 9, 0)}{_num(row['p99_ms'], 9, 0)}"
        f"{_num(row['events_per_run'], 8, 0)}"
        f"{_num(_ms(row['worker_cpu_s_per_run']), 9, 1)}"
        f"{_num(_ms(row['server_cpu_s_per_run']), 9, 1)}{_num(others * 1000, 9, 1)}"
        f"{_num((row['machine_busy'] or 0) * 100, 5, 0)}%"
        f"{_num(None if noise is None else noise * 100, 6, 0)}%"
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _fmt(value: float | None, suffix: str) -> str:
    return "—" if value is None else f"{value:.2f}{suffix}"


# -- entry point -----------------------------------------------------------------------------


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(sizes):
        raise argparse.ArgumentTypeError(f"give growing counts ≥ 1, e.g. 100,10000: {text!r}")
    return sizes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def parse_options(argv: Sequence[str]) -> Options:
    """Read the command line; ``--help`` and usage errors exit through argparse."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=(
            "Measure cancellations against a bare workflow of the same shape, each batch on a "
            "fresh in-memory Temporal dev server, with real PostgreSQL, the provider sandbox "
            "and the worker as its own process. Takes 6-7 minutes with the defaults on two cores."
        ),
    )
    parser.add_argument(
        "--n", type=_positive, default=DEFAULT_N, help="runs per batch (%(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=DEFAULT_CONCURRENCY,
        help="runs in flight at once (%(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, no table")
    for flag, default, waiting in (
        ("--idle-runs", DEFAULT_IDLE_RUNS, "for the merchant"),
        ("--undo-idle-runs", DEFAULT_UNDO_IDLE_RUNS, "out the undo window"),
    ):
        parser.add_argument(
            flag,
            type=_sizes,
            default=default,
            metavar="A,B",
            help=f"open runs waiting {waiting}, step by step (default "
            + ",".join(map(str, default))
            + ")",
        )
    parser.add_argument(
        "--low-load-n",
        type=_positive,
        default=DEFAULT_LOW_LOAD_N,
        help="runs of the concurrency-1 batches (%(default)s, at most --n)",
    )
    parser.add_argument("--skip-idle", action="store_true", help="leave out the idle footprint")
    parser.add_argument("--skip-scale-out", action="store_true", help="leave out two workers")
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP hook batch")
    parser.add_argument("--skip-mix", action="store_true", help="leave out the mixed batch")
    parser.add_argument(
        "--skip-relay", action="store_true", help="leave out the batch with the webhook relay"
    )
    parser.add_argument(
        "--durable-db",
        action="store_true",
        help="run PostgreSQL with fsync on (default off, like the in-memory Temporal server)",
    )
    parser.add_argument(
        "--stock-server",
        action="store_true",
        help="keep the dev server's per-shard queue read limits (see docs/performance.md)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="use DIR as the scratch folder and keep it (logs of every process)",
    )
    args = parser.parse_args(argv)
    return Options(
        n=args.n,
        concurrency=args.concurrency,
        json=args.json,
        idle_runs=args.idle_runs,
        undo_idle_runs=args.undo_idle_runs,
        low_load_n=args.low_load_n,
        skip_idle=args.skip_idle,
        skip_scale_out=args.skip_scale_out,
        skip_http=args.skip_http,
        skip_mix=args.skip_mix,
        skip_relay=args.skip_relay,
        durable_db=args.durable_db,
        stock_server=args.stock_server,
        keep=args.keep.absolute() if args.keep else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (met targets or not), 1 when it could not run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg == "--bulk" or arg.startswith("--bulk=") for arg in args):
        from tools import bench_bulk  # a separate benchmark: one bulk job (docs/bulk.md)

        return bench_bulk.main(args)
    options = parse_options(args)
    report = run_reported(run_bench(options), log)
    if isinstance(report, int):
        return report
    if options.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
