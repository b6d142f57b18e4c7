"""``python -m tools.chaos``: kill anything at any time; every cancellation must still end right.

The run starts its own stack (:mod:`tools.chaos_stack`: PostgreSQL, Temporal, the provider
sandbox with webhooks to the admin hook, the worker, the hook) in a temporary folder on free
loopback ports, then at once:

- drives ``--cancellations`` orders of mixed shapes (:mod:`tools.chaos_driver`) through the
  admin hook at a steady rate;
- injects ``--faults-per-kind`` faults of each kind at random times, one at a time: SIGKILL the
  worker, restart the sandbox (SIGTERM or SIGKILL), restart PostgreSQL, turn on the sandbox's
  fault injection for a few seconds, SIGKILL the admin hook, SIGKILL and restart Temporal,
  expire every idempotency key in flight (provider time +25 h), hold keys in use past the
  client's timeout (``409 idempotency_key_in_use``), deliver an older webhook late and replay
  it stale and forged.

Then it waits (bounded) for every order to finish its steps, reconciles
(:mod:`tools.chaos_reconcile`), counts the retries Temporal's histories show, and prints a
table, or with ``--json`` one JSON object. It exits 1 on any invariant violation, 2 when the
stack could not run. The state folder (logs of every process) is kept when something failed.

    python -m tools.chaos                                  # 60 cancellations, 3 faults per kind
    python -m tools.chaos --cancellations 300 --faults-per-kind 30   # the long form
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client
from temporalio.service import RPCError

from starter.client import connect_temporal
from starter.config import Settings
from tools.bench_relay import RelayProbe
from tools.chaos_driver import SHAPES, SHOP_ID, Driver, Endpoints
from tools.chaos_events import check_events, subscribe
from tools.chaos_reconcile import (
    ChaosRecord,
    Reconciliation,
    ViolationKind,
    World,
    reconcile,
)
from tools.chaos_stack import ChaosStack, ChaosStackError, FaultKind, InjectedFault, inject
from tools.devstack import NAMESPACE

DEFAULT_CANCELLATIONS = 60
DEFAULT_FAULTS_PER_KIND = 3
DEFAULT_RATE = 2.0
"""Orders started per second, at most: slower when the faults need more time (see below)."""
FAULT_SPACING_SECONDS = 3.0
"""One fault every this many seconds on average. A fault takes one to five seconds to inject
and repair; the orders are spread over the same time, so every fault meets running orders."""
SETTLE_TIMEOUT_SECONDS = 300.0
"""After the last order started and the last fault healed, how long orders may take to finish."""

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_STACK_FAILED = 2


@dataclass(frozen=True)
class ChaosOptions:
    """How big, how fast, how random."""

    cancellations: int = DEFAULT_CANCELLATIONS
    faults_per_kind: int = DEFAULT_FAULTS_PER_KIND
    rate: float = DEFAULT_RATE
    seed: int | None = None
    as_json: bool = False
    keep_state: bool = False
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    """The fault kinds to inject (``--skip-fault`` leaves some out)."""


@dataclass
class RetriesSeen:
    """Retries the run caused, as the workflows' histories and the driver saw them."""

    activity_attempts: Counter[str] = field(default_factory=Counter)
    """Per activity type: attempts beyond the first (each a retry after a failure or timeout)."""
    activity_timeouts: Counter[str] = field(default_factory=Counter)
    """Per activity type: the activities whose final attempt timed out."""
    retried_waits: dict[str, list[float]] = field(default_factory=dict)
    """Per activity type, for each retried activity: seconds from scheduling to the start of
    the attempt that counted (what the failed attempts and the backoff cost)."""
    workflow_tasks: Counter[str] = field(default_factory=Counter)
    """Workflow tasks that timed out (a killed worker held them) or failed."""
    http: Counter[str] = field(default_factory=Counter)
    """The driver's retries, by what the hook or the sandbox answered."""


@dataclass
class ChaosReport:
    """What a chaos run did and found."""

    options: ChaosOptions
    seed: int
    rate: float
    seconds: float
    record: ChaosRecord
    faults: list[InjectedFault]
    retries: RetriesSeen
    reconciliation: Reconciliation
    unfinished: int
    state_dir: Path | None = None

    @property
    def violations(self) -> int:
        """How many invariant violations the reconciler found."""
        return len(self.reconciliation.violations)

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object."""
        shapes = Counter(order.shape for order in self.record.orders)
        return {
            "cancellations": len(self.record.orders),
            "cancellation_runs": self.reconciliation.checked["cancellations"],
            "seed": self.seed,
            "rate_per_second": round(self.rate, 3),
            "seconds": round(self.seconds, 1),
            "shapes": dict(sorted(shapes.items())),
            "final_statuses": dict(sorted(self.reconciliation.final_statuses.items())),
            "faults": {kind.value: self._faults_of(kind) for kind in FaultKind},
            "fault_log": [
                {
                    "kind": f.kind.value,
                    "at": round(f.at, 2),
                    "detail": f.detail,
                    "seconds": round(f.seconds, 2),
                }
                for f in self.faults
            ],
            "retries": {
                "activity_attempts": dict(sorted(self.retries.activity_attempts.items())),
                "activity_timeouts": dict(sorted(self.retries.activity_timeouts.items())),
                "retried_activity_waits": {
                    name: _wait_stats(waits)
                    for name, waits in sorted(self.retries.retried_waits.items())
                },
                "workflow_tasks": dict(sorted(self.retries.workflow_tasks.items())),
                "http": dict(sorted(self.retries.http.items())),
            },
            "checked": dict(sorted(self.reconciliation.checked.items())),
            "unfinished": self.unfinished,
            "violations": self.violations,
            "violations_by_kind": dict(sorted(self.reconciliation.by_kind().items())),
            "violation_details": [v.as_dict() for v in self.reconciliation.violations],
            "state_dir": str(self.state_dir) if self.state_dir else None,
        }

    def _faults_of(self, kind: FaultKind) -> int:
        return sum(1 for f in self.faults if f.kind is kind)

    def table(self) -> str:
        """The report for people: one table, then every violation."""
        rows: list[tuple[str, str]] = []
        orders = self.record.orders
        statuses = self.reconciliation.final_statuses
        rows.append(("cancellations", f"{len(orders)} orders, {sum(statuses.values())} runs"))
        rows.append(("  final status", _counts(statuses)))
        rows.append(("  shapes", f"{len({o.shape for o in orders})} of {len(SHAPES)}"))
        rows.append(("faults injected", str(len(self.faults))))
        for kind in FaultKind:
            of_kind = [f for f in self.faults if f.kind is kind]
            rows.append((f"  {kind.value}", f"{len(of_kind)}  {_fault_summary(kind, of_kind)}"))
        retries = self.retries
        rows.append(("retries observed", ""))
        rows.append(("  activity attempts > 1", _counts(retries.activity_attempts)))
        rows.append(("  activity timeouts", _counts(retries.activity_timeouts)))
        for name, waits in sorted(retries.retried_waits.items()):
            stats = _wait_stats(waits)
            rows.append(
                (
                    f"    {name} waited",
                    f"{stats['mean']:.1f} s mean, {stats['max']:.1f} s max"
                    f" until the attempt that worked ({len(waits)} activities)",
                )
            )
        rows.append(("  workflow task retries", _counts(retries.workflow_tasks)))
        rows.append(("  driver HTTP retries", _counts(retries.http)))
        rows.append(("checked", _counts(self.reconciliation.checked)))
        rows.append(("invariant violations", str(self.violations)))
        for violated, count in sorted(self.reconciliation.by_kind().items()):
            rows.append((f"  {violated}", str(count)))
        width = max(len(name) for name, _ in rows) + 2
        lines = [
            f"chaos run: {len(orders)} cancellations, {len(self.faults)} faults, seed {self.seed},"
            f" {self.rate:.2f} orders/s, {self.seconds:.0f} s",
            "",
            *(f"{name:<{width}}{value}".rstrip() for name, value in rows),
        ]
        if self.reconciliation.violations:
            lines += ["", "violations:"]
            lines += [
                f"  {v.kind.value}: {v.subject}: {v.detail}" for v in self.reconciliation.violations
            ]
        if self.state_dir is not None:
            lines += ["", f"logs and state kept in {self.state_dir}"]
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    if not counter:
        return "0"
    total = sum(counter.values())
    parts = ", ".join(f"{name} {count}" for name, count in counter.most_common())
    return f"{total}: {parts}"


def _wait_stats(waits: list[float]) -> dict[str, float]:
    return {
        "activities": len(waits),
        "mean": round(sum(waits) / len(waits), 2),
        "max": round(max(waits), 2),
    }


def _fault_summary(kind: FaultKind, faults: list[InjectedFault]) -> str:
    if not faults:
        return ""
    heal = f"healed in {min(f.seconds for f in faults):.1f}–{max(f.seconds for f in faults):.1f} s"
    if kind is FaultKind.SANDBOX_RESTART:
        signals = Counter(f.detail.split(",")[0] for f in faults)
        return f"({', '.join(f'{s} {n}' for s, n in sorted(signals.items()))}; {heal})"
    what = {
        FaultKind.WORKER_KILL: "SIGKILL worker and relay, then new ones",
        FaultKind.POSTGRES_RESTART: "fast shutdown, same data and port",
        FaultKind.PROVIDER_FAULTS: "503s, hangs, effect-then-503",
        FaultKind.HOOK_KILL: "SIGKILL mid-request, a new hook on the same port",
        FaultKind.TEMPORAL_RESTART: "SIGKILL, same SQLite file and port",
        FaultKind.KEY_EXPIRY: "effect-then-503, then provider time +25 h",
        FaultKind.KEY_IN_USE: "slow effects past the client's timeout, 409 in use",
        FaultKind.WEBHOOK_REPLAY: "an older event late, stale and forged replays",
    }[kind]
    return f"({what}; {heal})"


# -- the run -------------------------------------------------------------------------------------


def plan_faults(
    per_kind: int,
    window: float,
    rng: random.Random,
    of: Sequence[FaultKind] = tuple(FaultKind),
) -> list[tuple[float, FaultKind]]:
    """``per_kind`` faults of each kind in ``of`` at random times in ``window`` seconds, one
    per slot."""
    kinds = [kind for kind in of for _ in range(per_kind)]
    rng.shuffle(kinds)
    if not kinds:
        return []
    slot = window / len(kinds)
    return [(n * slot + rng.uniform(0.1, 0.9) * slot, kind) for n, kind in enumerate(kinds)]


def say(text: str) -> None:
    """Progress, on stderr: stdout is the report."""
    print(f"chaos: {text}", file=sys.stderr, flush=True)


@dataclass
class ChaosSession:
    """A running chaos stack and the record of what was done on it."""

    options: ChaosOptions
    stack: ChaosStack
    seed: int
    temporal: Client
    record: ChaosRecord = field(default_factory=lambda: ChaosRecord(shop_id=SHOP_ID))
    broken: list[str] = field(default_factory=list)
    """What the stack did wrong during a fault (a stale or forged webhook it took)."""

    @property
    def world(self) -> World:
        """Where the reconciler reads."""
        endpoints = self.stack.endpoints
        return World(endpoints.database_url, endpoints.sandbox_url, self.temporal)

    async def run(self) -> ChaosReport:
        """Drive, inject, settle, reconcile."""
        options = self.options
        rng = random.Random(self.seed)
        window = max(
            options.cancellations / options.rate,
            len(options.kinds) * options.faults_per_kind * FAULT_SPACING_SECONDS,
        )
        rate = options.cancellations / window if options.cancellations else options.rate
        plan = plan_faults(
            options.faults_per_kind, window, random.Random(rng.random()), options.kinds
        )
        stack = self.stack
        endpoints = Endpoints(stack.endpoints.hook_url, stack.endpoints.sandbox_url, stack.token)
        driver = Driver(endpoints, self.record, random.Random(rng.random()))
        faults: list[InjectedFault] = []
        began = time.monotonic()
        probe = RelayProbe()
        await probe.__aenter__()
        try:
            # Every event of the shop goes to a receiver here; checked after the reconciliation.
            await subscribe(stack.endpoints.database_url, SHOP_ID, probe)
            await driver.set_up_shop()
            say(
                f"driving {options.cancellations} orders at {rate:.2f}/s with {len(plan)} faults"
                f" over {window:.0f} s"
            )
            fault_rng = random.Random(rng.random())
            async with asyncio.TaskGroup() as group:
                group.create_task(driver.drive(options.cancellations, rate))
                group.create_task(self._inject_all(plan, fault_rng, began, faults))
            say(
                f"all orders started and faults healed at {time.monotonic() - began:.0f} s;"
                " waiting for the orders to finish"
            )
            unfinished = await driver.settle(SETTLE_TIMEOUT_SECONDS)
            say(f"settled at {time.monotonic() - began:.0f} s; reconciling")
            reconciliation = await reconcile(self.record, self.world)
            for broke in self.broken:
                reconciliation.add(ViolationKind.WEBHOOK_ACCEPTED, "webhook route", broke)
            retries = await observe_retries(self.temporal, reconciliation.cancellation_ids)
            say("waiting for every webhook to be delivered")
            events = await check_events(stack.endpoints.database_url, SHOP_ID, probe)
            reconciliation.checked["events"] = events.events
            reconciliation.checked["event deliveries"] = events.deliveries
            for finding in events.findings or []:
                reconciliation.add(ViolationKind(finding.kind), finding.subject, finding.detail)
        finally:
            await driver.aclose()
            await probe.__aexit__(None, None, None)
        retries.http = driver.http.retries
        return ChaosReport(
            options=options,
            seed=self.seed,
            rate=rate,
            seconds=time.monotonic() - began,
            record=self.record,
            faults=faults,
            retries=retries,
            reconciliation=reconciliation,
            unfinished=unfinished,
        )

    async def _inject_all(
        self,
        plan: list[tuple[float, FaultKind]],
        rng: random.Random,
        began: float,
        faults: list[InjectedFault],
    ) -> None:
        for at, kind in plan:
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            payments = [p for order in self.record.orders for p in order.payments]
            fault = await inject(self.stack, kind, rng, began, payments)
            faults.append(fault)
            if fault.broke is not None:
                self.broken.append(fault.broke)
            say(
                f"{fault.at:6.1f} s  {kind.value}: {fault.detail} (healed in {fault.seconds:.1f} s)"
            )


@contextlib.asynccontextmanager
async def chaos_session(options: ChaosOptions, root: Path) -> AsyncIterator[ChaosSession]:
    """Start a chaos stack in ``root``; stop it when the block ends."""
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    stack = ChaosStack(
        root,
        shop_id=SHOP_ID,
        token=secrets.token_urlsafe(24),
        webhook_secret=secrets.token_urlsafe(24),
    )
    began = time.monotonic()
    try:
        await stack.start()
        say(f"stack up in {time.monotonic() - began:.1f} s in {root}")
        settings = Settings(
            temporal_connect={
                "target_host": stack.endpoints.temporal_address,
                "namespace": NAMESPACE,
            }
        )
        temporal = await connect_temporal(settings)
        yield ChaosSession(options, stack, seed, temporal)
    finally:
        await asyncio.to_thread(stack.stop)


async def observe_retries(client: Client, cancellation_ids: Iterable[str]) -> RetriesSeen:
    """Count the retries each run's history shows.

    An activity's started event carries its final attempt number (retries add no events), so
    ``attempt - 1`` is how often it was retried: after a 503, a timeout, or a worker that died
    holding it.
    """
    seen = RetriesSeen()
    limit = asyncio.Semaphore(16)

    async def one(cancellation_id: str) -> None:
        async with limit:
            try:
                history = await client.get_workflow_handle(cancellation_id).fetch_history()
            except RPCError:
                return
        scheduled: dict[int, tuple[str, float]] = {}
        for event in history.events:
            at = event.event_time.ToDatetime().timestamp()
            match event.event_type:
                case EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    attributes = event.activity_task_scheduled_event_attributes
                    scheduled[event.event_id] = (attributes.activity_type.name, at)
                case EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    started = event.activity_task_started_event_attributes
                    name, since = scheduled.get(started.scheduled_event_id, ("?", at))
                    if started.attempt > 1:
                        seen.activity_attempts[name] += started.attempt - 1
                        seen.retried_waits.setdefault(name, []).append(at - since)
                case EventType.EVENT_TYPE_MARKER_RECORDED:
                    # A local activity's marker gives its attempts, not when they ran.
                    local = _local_activity(event.marker_recorded_event_attributes)
                    if local is not None and local[1] > 1:
                        seen.activity_attempts[local[0]] += local[1] - 1
                case EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                    timed_out = event.activity_task_timed_out_event_attributes
                    name, _ = scheduled.get(timed_out.scheduled_event_id, ("?", at))
                    seen.activity_timeouts[name] += 1
                case EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                    timeout = event.workflow_task_timed_out_event_attributes.timeout_type
                    kind = TimeoutType.Name(timeout).removeprefix("TIMEOUT_TYPE_").lower()
                    seen.workflow_tasks[f"timed out ({kind})"] += 1
                case EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    seen.workflow_tasks["failed"] += 1
                case _:
                    pass

    await asyncio.gather(*(one(c) for c in cancellation_ids))
    return seen


def _local_activity(marker: MarkerRecordedEventAttributes) -> tuple[str, int] | None:
    """A local activity's name (marked ``local``) and final attempt, from the SDK's marker;
    ``None`` for other markers."""
    if marker.marker_name != "core_local_activity" or "data" not in marker.details:
        return None
    try:
        data = json.loads(marker.details["data"].payloads[0].data)
        return f"{data['activity_type']} (local)", int(data["attempt"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


# -- the command line ----------------------------------------------------------------------------


def parse_options(argv: Sequence[str]) -> ChaosOptions:
    """Read the command line; ``--help`` and usage errors exit through argparse."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos",
        description=(
            "Start a throwaway stack, drive cancellations of every shape through the admin hook"
            " while killing and restarting its parts, then reconcile the database, the"
            " provider's ledger and the workflows. Exits 1 on any invariant violation."
        ),
    )
    parser.add_argument(
        "--cancellations",
        type=_count,
        default=DEFAULT_CANCELLATIONS,
        metavar="N",
        help=f"orders to cancel (default {DEFAULT_CANCELLATIONS})",
    )
    parser.add_argument(
        "--faults-per-kind",
        type=_count,
        default=DEFAULT_FAULTS_PER_KIND,
        metavar="K",
        help=(
            "faults of each kind: worker SIGKILL, sandbox restart, PostgreSQL restart,"
            " sandbox fault injection, hook SIGKILL, Temporal restart, key expiry, key in use,"
            " webhook replay"
            f" (default {DEFAULT_FAULTS_PER_KIND})"
        ),
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        metavar="R/s",
        help=(
            f"orders started per second, at most (default {DEFAULT_RATE:g}/s); lower when the"
            f" faults need more room (one per {FAULT_SPACING_SECONDS:g} s)"
        ),
    )
    parser.add_argument("--seed", type=int, help="make the shapes, amounts and faults repeatable")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--skip-fault",
        action="append",
        default=[],
        choices=[kind.value for kind in FaultKind],
        metavar="KIND",
        help="leave this kind of fault out (repeatable), e.g. key_expiry",
    )
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the state folder (databases, logs) even when everything reconciled",
    )
    args = parser.parse_args(argv)
    return ChaosOptions(
        cancellations=args.cancellations,
        faults_per_kind=args.faults_per_kind,
        rate=args.rate,
        seed=args.seed,
        as_json=args.as_json,
        keep_state=args.keep_state,
        kinds=tuple(kind for kind in FaultKind if kind.value not in args.skip_fault),
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text.removesuffix("/s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate such as 2 or 0.5/s") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 100 per second")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run a chaos run; 0 when everything reconciled, 1 on violations, 2 when the stack failed."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    return asyncio.run(_main(options))


async def _main(options: ChaosOptions) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # SIGTERM stops the run like Ctrl-C does: the stack is stopped, nothing is left behind.
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    report: ChaosReport | None = None
    try:
        async with chaos_session(options, root) as session:
            report = await session.run()
    except ChaosStackError as error:
        say(str(error))
        say(f"logs kept in {root}")
        return EXIT_STACK_FAILED
    finally:
        if report is not None and (report.violations or options.keep_state):
            report.state_dir = root
        elif report is not None:
            shutil.rmtree(root, ignore_errors=True)
    if options.as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.table())
    return EXIT_VIOLATIONS if report.violations else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
