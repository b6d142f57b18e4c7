"""``python -m starter bench --bulk N``: one bulk job against N single merchant starts.

In one run, on one fresh Temporal dev server, database and worker process
(:mod:`tools.bench_stack`):

1. **single**: N merchant-initiated cancellations started one by one through
   :meth:`CancellationClient.start_cancellation`, C at a time (C = the job's concurrency),
   half before the job and half after it;
2. **bulk**: one ``BulkCancellation`` job over N other orders of the same shape, at
   concurrency C.

Each order holds the SKU twice and another item once, so both phases start the same
partial cancellation. The clock stops when the last start answered (single) or the last
outcome was written (bulk); refunds finish afterwards in both, and the bench waits for
them between the phases so neither pays for the other's. Reported: orders per second
and their ratio, the job's history events per order, the worker's RSS before and at its
peak during the job, the time to the first and the last outcome, and the worker's CPU
seconds per order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.provider_client import PaymentProviderClient
from domain.bulk import DEFAULT_CONCURRENCY, BulkRequest, BulkStatus, bulk_workflow_id
from domain.cancellation import CanceledItem, Channel, InitiatedBy, ReasonCode
from domain.order import OrderDocument, OrderItem, OrderStatus, Tender, TenderKind
from domain.refund_plan import RefundMethod
from domain.requests import AcceptRequest, StartRequest
from starter.bulk import BulkClient
from tools.bench_stack import Batch, BenchStack, Meter, gather_limited, run_reported

DEFAULT_N = 2_000
WARMUP_ORDERS = 20
SETUP_CONCURRENCY = 16
POLL_SECONDS = 0.05
DRAIN_TIMEOUT_SECONDS = 600.0
TARGET_RATIO = 0.9
CURRENCY = "KRW"
SINGLE_SKU = "sku-single"
BULK_SKU = "sku-bulk"


def log(message: str) -> None:
    """Progress for people, on stderr (stdout holds the table or the JSON)."""
    print(f"bench --bulk: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    n: int
    concurrency: int
    json: bool


async def _make_orders(
    batch: Batch, provider: PaymentProviderClient, prefix: str, sku: str, n: int
) -> list[str]:
    """``n`` paid card orders, each holding ``sku`` twice and another item once."""
    order_ids = [f"{prefix}-{k:06d}" for k in range(n)]

    async def one(k: int) -> None:
        payment = await provider.create_payment(
            47_000, CURRENCY, capture=True, idempotency_key=f"bench-bulk-{uuid.uuid4().hex}"
        )
        doc = OrderDocument(
            customer_id=f"cust-{prefix}-{k}",
            currency=CURRENCY,
            status=OrderStatus.PAID,
            shipping_fee=3_000,
            items=[
                OrderItem(item_id="i1", sku=sku, quantity=2, unit_price=10_000),
                # Many other SKUs, as in a real shop: one hot stock row would measure lock waits.
                OrderItem(item_id="i2", sku=f"sku-tee-{k % 50}", quantity=1, unit_price=24_000),
            ],
            tenders=[
                Tender(
                    tender_id="t1", kind=TenderKind.CARD, amount=47_000, payment_id=payment["id"]
                )
            ],
        )
        await batch.client.store.put_order(batch.shop_id, order_ids[k], doc)

    await gather_limited(SETUP_CONCURRENCY, [functools.partial(one, k) for k in range(n)])
    return order_ids


def _single_start() -> StartRequest:
    return StartRequest(
        initiated_by=InitiatedBy.MERCHANT,
        channel=Channel.ADMIN,
        reason_code=ReasonCode.SOLD_OUT,
        items=[CanceledItem(item_id="i1", quantity=2)],
        accept=AcceptRequest(
            reason_code=ReasonCode.SOLD_OUT, refund_method=RefundMethod.ORIGINAL, restock=False
        ),
    )


async def _drain(batch: Batch, expected: int) -> None:
    """Wait until ``expected`` cancellations of the shop are canceled (refunds done)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        done = await batch.pool.fetchval(
            "SELECT count(*) FROM cancellations WHERE shop_id=$1 AND status='canceled'",
            batch.shop_id,
        )
        if done >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {expected} cancellations completed")
        await asyncio.sleep(0.2)


async def _singles(batch: Batch, order_ids: list[str], concurrency: int) -> dict[str, Any]:
    answered: list[float] = []
    meter = batch.meter
    before = meter.sample()
    began = time.perf_counter()

    async def one(order_id: str) -> None:
        _, created = await batch.client.start_cancellation(
            batch.shop_id, order_id, _single_start(), actor="merchant:bench"
        )
        assert created, order_id
        answered.append(time.perf_counter() - began)

    await gather_limited(concurrency, [functools.partial(one, o) for o in order_ids])
    usage = Meter.usage(before, meter.sample())
    last = max(answered)
    return {
        "orders": len(order_ids),
        "seconds": round(last, 2),
        "orders_per_s": round(len(order_ids) / last, 1),
        "first_outcome_s": round(min(answered), 3),
        "last_outcome_s": round(last, 2),
        "worker_cpu_ms_per_order": round(1000 * usage.processes["worker"] / len(order_ids), 1),
    }


def _combined(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The two halves of the single starts as one phase (times add up)."""
    orders = first["orders"] + second["orders"]
    seconds = first["seconds"] + second["seconds"]
    cpu = first["worker_cpu_ms_per_order"] * first["orders"]
    cpu += second["worker_cpu_ms_per_order"] * second["orders"]
    return {
        "orders": orders,
        "seconds": round(seconds, 2),
        "orders_per_s": round(orders / seconds, 1),
        "orders_per_s_before_after": [first["orders_per_s"], second["orders_per_s"]],
        "first_outcome_s": first["first_outcome_s"],
        "last_outcome_s": round(seconds, 2),
        "worker_cpu_ms_per_order": round(cpu / orders, 1),
    }


async def _bulk(batch: Batch, n: int, concurrency: int) -> dict[str, Any]:
    bulk = BulkClient(batch.client, task_queue=batch.settings.task_queue, concurrency=concurrency)
    rss_before = batch.worker_rss()
    peak = rss_before
    meter = batch.meter
    before = meter.sample()
    began_wall = time.time()
    began = time.perf_counter()
    job = await bulk.start(batch.shop_id, BulkRequest(sku=BULK_SKU), actor="merchant:bench")
    while job.status is BulkStatus.RUNNING:
        peak = max(peak, batch.worker_rss())
        await asyncio.sleep(POLL_SECONDS)
        job = await bulk.get(batch.shop_id, job.bulk_id)
    elapsed = time.perf_counter() - began
    usage = Meter.usage(before, meter.sample())
    assert job.counts.started == n, job
    span = await batch.pool.fetchrow(
        "SELECT min(at) AS first, max(at) AS last FROM bulk_cancellation_items"
        " WHERE shop_id=$1 AND bulk_id=$2",
        batch.shop_id,
        job.bulk_id,
    )
    assert span is not None
    first, last = span["first"], span["last"]
    events, runs = await _history_events(batch, bulk_workflow_id(batch.shop_id, job.bulk_id))
    last_s = last.timestamp() - began_wall
    return {
        "orders": n,
        "seconds": round(elapsed, 2),
        "orders_per_s": round(n / last_s, 1),
        "first_outcome_s": round(first.timestamp() - began_wall, 3),
        "last_outcome_s": round(last_s, 2),
        "job_completed_s": round(elapsed, 2),
        "history_events": events,
        "history_events_per_order": round(events / n, 3),
        "runs": runs,
        "worker_rss_mib_before": round(rss_before / 2**20, 1),
        "worker_rss_mib_peak": round(peak / 2**20, 1),
        "worker_cpu_ms_per_order": round(1000 * usage.processes["worker"] / n, 1),
    }


async def _history_events(batch: Batch, workflow_id: str) -> tuple[int, int]:
    temporal = batch.client.temporal
    runs = [r async for r in temporal.list_workflows(f"WorkflowId = '{workflow_id}'")]
    events = 0
    for run in runs:
        history = await temporal.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
        events += len(history.events)
    return events, len(runs)


async def run_bench(options: Options) -> dict[str, Any]:
    """Both phases on one fresh stack; the report as a JSON-ready dict."""
    work_dir = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    stack = BenchStack(work_dir, durable_db=False, log=log)
    try:
        await stack.start()
        provider = PaymentProviderClient(stack.sandbox_url)
        try:
            async with stack.batch("bulk") as batch:
                log(f"creating {2 * options.n + WARMUP_ORDERS} orders")
                warmup = await _make_orders(batch, provider, "w", SINGLE_SKU, WARMUP_ORDERS)
                half = options.n // 2
                before = await _make_orders(batch, provider, "s1", SINGLE_SKU, half)
                after = await _make_orders(batch, provider, "s2", SINGLE_SKU, options.n - half)
                await _make_orders(batch, provider, "b", BULK_SKU, options.n)
                await _singles(batch, warmup, options.concurrency)
                done = WARMUP_ORDERS
                await _drain(batch, done)
                # Half the single starts before the job and half after, so neither side
                # gains from a warmer (or a more loaded) machine.
                log(f"single: {half} starts at concurrency {options.concurrency}")
                first_half = await _singles(batch, before, options.concurrency)
                done += half
                await _drain(batch, done)
                log(f"bulk: one job of {options.n} orders at concurrency {options.concurrency}")
                bulk = await _bulk(batch, options.n, options.concurrency)
                done += options.n
                await _drain(batch, done)
                log(f"single: {options.n - half} starts at concurrency {options.concurrency}")
                second_half = await _singles(batch, after, options.concurrency)
                await _drain(batch, done + options.n - half)
                single = _combined(first_half, second_half)
        finally:
            await provider.aclose()
    finally:
        stack.stop()
        stack.remove_work_dir()
    ratio = bulk["orders_per_s"] / single["orders_per_s"]
    return {
        "n": options.n,
        "concurrency": options.concurrency,
        "single": single,
        "bulk": bulk,
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
    }


def render(report: dict[str, Any]) -> str:
    """The report as a table for people."""
    single, bulk = report["single"], report["bulk"]
    rows = [
        ("orders per second", single["orders_per_s"], bulk["orders_per_s"]),
        (
            "  single: before / after the job",
            " / ".join(str(v) for v in single["orders_per_s_before_after"]),
            "",
        ),
        ("first outcome (s)", single["first_outcome_s"], bulk["first_outcome_s"]),
        ("last outcome (s)", single["last_outcome_s"], bulk["last_outcome_s"]),
        (
            "worker CPU ms per order",
            single["worker_cpu_ms_per_order"],
            bulk["worker_cpu_ms_per_order"],
        ),
        ("job history events per order", "-", bulk["history_events_per_order"]),
        ("job runs (continue-as-new)", "-", bulk["runs"]),
        (
            "worker RSS MiB before / peak",
            "-",
            f"{bulk['worker_rss_mib_before']} / {bulk['worker_rss_mib_peak']}",
        ),
    ]
    lines = [
        f"{report['n']} orders, concurrency {report['concurrency']}",
        f"{'':32}{'single starts':>16}{'one bulk job':>16}",
        *(f"{label:32}{a!s:>16}{b!s:>16}" for label, a, b in rows),
        f"bulk / single throughput: {report['ratio']} (target >= {report['target_ratio']}:"
        f" {'met' if report['met'] else 'not met'})",
    ]
    return "\n".join(lines)


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m starter bench --bulk")
    parser.add_argument("--bulk", type=int, default=DEFAULT_N, metavar="N", help="orders per phase")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.bulk < 1 or args.concurrency < 1:
        parser.error("--bulk and --concurrency must be positive")
    return Options(n=args.bulk, concurrency=args.concurrency, json=args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both phases; 0 when it ran (target met or not), 1 when it could not run."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    report = run_reported(run_bench(options), log)
    if isinstance(report, int):
        return report
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(report, indent=2) if options.json else render(report))
    return 0
