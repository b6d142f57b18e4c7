"""The benchmark's processes, and what each of them costs, read from ``/proc``.

One :class:`BenchStack` per benchmark run holds what every batch shares: an embedded PostgreSQL
and the payment provider sandbox. Each measured batch then gets a world of its own from
:meth:`BenchStack.batch`: a brand-new in-memory Temporal dev server (started exactly like the
tests' and the dev stack's, through :class:`~tools.temporal_server.DevServer`), a fresh
migrated database, and its worker process(es) — ``python worker.py`` for the product,
``python -m tools.bench_skeleton`` for the skeleton — plus, when asked, the admin hook
(``python -m starter.http``). Every process listens on 127.0.0.1 on a port the kernel picked
and is stopped by its process id.

CPU time and memory come from ``/proc`` (Linux): a process's user and system time, including
the children it reaped and the descendants still running (PostgreSQL forks one backend per
connection), and its resident set size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from activities.database import StoreRepository, apply_migrations, create_pool
from starter.client import CancellationClient, connect_temporal
from starter.config import Settings
from tools import ports
from tools.bench_skeleton import SKELETON_TASK_QUEUE
from tools.devstack import WORKER_READY_LINE
from tools.embedded_postgres import EmbeddedPostgres
from tools.processes import ChildProcess, sandbox_command
from tools.temporal_server import DevServer

REPO_ROOT = Path(__file__).resolve().parent.parent


NAMESPACE = "default"
BENCH_TASK_QUEUE = "bench-order-cancellations"

LIFTED_QUEUE_LIMITS = (
    "history.transferProcessorMaxPollRPS=10000",
    "history.timerProcessorMaxPollRPS=10000",
    "history.visibilityProcessorMaxPollRPS=10000",
)
"""Dynamic config for every batch's server, skeleton and product alike.

Each history shard reads its task queues (transfer, timer, visibility) at most 20 times a
second by default. A cluster has hundreds of shards; the dev server has one, so that per-shard
limit becomes a limit of the whole server: once its small burst is spent, every workflow task
waits up to 50 ms for a read, and a run's latency measures the limiter, not the run (the
skeleton at concurrency 1: 190 ms with the limit, 50 ms without). ``--stock-server`` keeps it."""

# Start-up limits: a part is usually up in one to three seconds; a cold, busy machine (first
# import of the SDK's native module, first initdb) can take far longer.
POSTGRES_STARTUP_TIMEOUT_SECONDS = 120.0
CHILD_STARTUP_TIMEOUT_SECONDS = 90.0
# worker.py lets running activities finish for 20 s after SIGTERM; SIGKILL a little later.
WORKER_STOP_TIMEOUT_SECONDS = 25.0
OTHER_STOP_TIMEOUT_SECONDS = 10.0

# The project's own variables: a benchmark's children must talk to the benchmark's servers
# only, whatever the developer's shell points at (TEMPORAL_* is dropped as a prefix).
_PROJECT_VARIABLES = frozenset(
    {
        "DATABASE_URL",
        "PAYMENT_PROVIDER_URL",
        "PAYMENT_PROVIDER_WEBHOOK_SECRET",
        "ADMIN_HOOK_PORT",
        "ADMIN_HOOK_TOKENS",
        "PAYLOAD_ENCRYPTION_KEY",
        "WORKER_METRICS_PORT",
        "WORKER_MAX_CACHED_WORKFLOWS",
        "TASK_QUEUE",
        "PROVIDER_TASK_QUEUE",
        "DEVSTACK_STATE_DIR",
    }
)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is index 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_cpu_seconds(pid: int, children: Mapping[int, list[int]] | None = None) -> float:
    """User plus system CPU seconds of ``pid``, its reaped children and its live descendants."""
    if children is None:
        children = _children_by_parent()
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        fields = _stat_fields(current)
        if fields is None:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat(5), 11-14 here.
        total += sum(int(value) for value in fields[11:15])
        stack.extend(children.get(current, ()))
    return total / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores together."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    values = [int(value) for value in first[1:9]]
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far, per measured process and by the whole machine."""

    at: float
    processes: dict[str, float]
    machine_busy: float
    machine_total: float


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds used between two samples."""

    wall_s: float
    processes: dict[str, float]
    machine_busy_s: float
    machine_total_s: float

    @property
    def ours_s(self) -> float:
        """CPU seconds of every process of the benchmark together."""
        return sum(self.processes.values())

    @property
    def others_s(self) -> float:
        """CPU seconds the rest of the machine used meanwhile (noise, when it is large)."""
        return max(self.machine_busy_s - self.ours_s, 0.0)

    def cores(self, name: str) -> float:
        """How many cores ``name`` kept busy on average."""
        return self.processes.get(name, 0.0) / self.wall_s if self.wall_s > 0 else 0.0


class Meter:
    """Samples the CPU time of named processes (the benchmark itself is ``bench``)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)

    def sample(self) -> CpuSample:
        """Read every process now."""
        children = _children_by_parent()
        processes = {name: process_cpu_seconds(pid, children) for name, pid in self.pids.items()}
        # All threads of this process: the event loop and the SDK's Rust core.
        processes["bench"] = time.process_time()
        busy, total = machine_cpu_seconds()
        return CpuSample(time.perf_counter(), processes, busy, total)

    @staticmethod
    def usage(before: CpuSample, after: CpuSample) -> CpuUsage:
        """What was used between ``before`` and ``after``."""
        return CpuUsage(
            wall_s=after.at - before.at,
            processes={
                name: after.processes[name] - before.processes.get(name, 0.0)
                for name in after.processes
            },
            machine_busy_s=after.machine_busy - before.machine_busy,
            machine_total_s=after.machine_total - before.machine_total,
        )


# -- the stack -------------------------------------------------------------------------------


@dataclass
class Batch:
    """One measured batch's world: its Temporal server, database, workers and clients."""

    name: str
    settings: Settings
    client: CancellationClient
    """The product's Python client (its Temporal client serves the skeleton too)."""
    pool: asyncpg.Pool
    meter: Meter
    workers: list[ChildProcess]
    shop_id: str
    hook_url: str | None = None
    hook_token: str | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def worker_rss(self) -> int:
        """Resident set size of the first worker process."""
        return rss_bytes(self.pids["worker"])

    def server_rss(self) -> int:
        """Resident set size of the Temporal server."""
        return rss_bytes(self.pids["server"])


class BenchStack:
    """PostgreSQL and the sandbox for the whole benchmark; a fresh world per batch."""

    def __init__(
        self,
        work_dir: Path,
        *,
        durable_db: bool,
        stock_server: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.work_dir = work_dir
        self.server_args: list[str] = []
        if not stock_server:
            for value in LIFTED_QUEUE_LIMITS:
                self.server_args += ["--dynamic-config-value", value]
        self.log = log
        self.postgres = EmbeddedPostgres(
            work_dir / "postgres", ports.free_port_off_dev_stack(), durable=durable_db
        )
        self.sandbox_port = ports.free_port_off_dev_stack()
        self.sandbox_url = f"http://{ports.LOOPBACK}:{self.sandbox_port}"
        self._sandbox_pid: int | None = None
        self.sandbox = ChildProcess(
            "sandbox",
            sandbox_command(ports.LOOPBACK, self.sandbox_port, work_dir / "sandbox.sqlite3"),
            self._child_env({}),
            work_dir / "sandbox.log",
        )
        self._batches = 0

    async def start(self) -> None:
        """Start PostgreSQL and the sandbox; wait until both answer."""
        await asyncio.to_thread(self.postgres.start, POSTGRES_STARTUP_TIMEOUT_SECONDS)
        self._sandbox_pid = self.sandbox.launch()
        async with asyncio.timeout(CHILD_STARTUP_TIMEOUT_SECONDS):
            await ports.wait_for_http_async(
                f"{self.sandbox_url}/healthz", alive=lambda: self.sandbox.is_running
            )

    def stop(self) -> None:
        """Stop the sandbox and PostgreSQL; safe to call twice."""
        self.sandbox.stop(OTHER_STOP_TIMEOUT_SECONDS)
        self.postgres.stop()

    @property
    def shared_pids(self) -> dict[str, int]:
        """The processes every batch uses: PostgreSQL (with its backends) and the sandbox."""
        pids: dict[str, int] = {}
        if self.postgres.pid is not None:
            pids["postgres"] = self.postgres.pid
        if self._sandbox_pid is not None and self.sandbox.is_running:
            pids["sandbox"] = self._sandbox_pid
        return pids

    @contextlib.asynccontextmanager
    async def batch(
        self,
        name: str,
        *,
        skeleton: bool = False,
        workers: int = 1,
        hook: bool = False,
        relay: bool = False,
    ) -> AsyncIterator[Batch]:
        """A fresh Temporal server, database and worker(s) for one measured batch.

        Args:
            name: Names the batch's database and log files.
            skeleton: Run the skeleton's worker instead of the product's.
            workers: How many worker processes to run.
            hook: Also run the admin hook (``python -m starter.http``).
            relay: Also run the webhook relay (``python -m starter.relay``).
        """
        self._batches += 1
        label = f"{self._batches:02d}-{name}"
        database = f"bench_{self._batches:02d}"
        await self.postgres.create_database_async(database)
        database_url = self.postgres.dsn(database)
        # The worker applies the migrations itself, but our pool needs them before it starts.
        await apply_migrations(database_url)
        server = DevServer(
            port=ports.free_port_off_dev_stack(),
            ui_port=None,
            db_filename=None,
            namespace=NAMESPACE,
            log_path=self.work_dir / f"temporal-{label}.log",
            extra_args=[
                "--http-port",
                str(ports.free_port_off_dev_stack()),
                "--metrics-port",
                str(ports.free_port_off_dev_stack()),
                *self.server_args,
            ],
        )
        env_vars = {
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_NAMESPACE": NAMESPACE,
            "DATABASE_URL": database_url,
            "PAYMENT_PROVIDER_URL": self.sandbox_url,
            "TASK_QUEUE": SKELETON_TASK_QUEUE if skeleton else BENCH_TASK_QUEUE,
        }
        hook_port = ports.free_port_off_dev_stack()
        hook_token = f"bench-token-{os.urandom(8).hex()}"
        shop_id = f"bench-{self._batches:02d}"
        if hook:
            env_vars["ADMIN_HOOK_PORT"] = str(hook_port)
            env_vars["ADMIN_HOOK_TOKENS"] = f"{shop_id}:{hook_token}"
        settings = Settings.from_env(env_vars)
        command = (
            [sys.executable, "-m", "tools.bench_skeleton"]
            if skeleton
            else [sys.executable, str(REPO_ROOT / "worker.py")]
        )
        children = [
            ChildProcess(
                f"worker-{n}",
                command,
                self._child_env(env_vars),
                self.work_dir / f"worker-{label}-{n}.log",
            )
            for n in range(1, workers + 1)
        ]
        if relay:
            # The bench's receiver listens on loopback over plain http.
            env_vars["WEBHOOKS_ALLOW_HTTP"] = "1"

        def module_child(name: str, module: str) -> ChildProcess:
            return ChildProcess(
                name,
                [sys.executable, "-m", module],
                self._child_env(env_vars),
                self.work_dir / f"{name}-{label}.log",
            )

        relay_process = module_child("relay", "starter.relay") if relay else None
        hook_process = module_child("hook", "starter.http") if hook else None
        client: CancellationClient | None = None
        pool: asyncpg.Pool | None = None
        try:
            await server.start()
            pids = dict(self.shared_pids)
            assert server.pid is not None
            pids["server"] = server.pid
            for n, child in enumerate(children, start=1):
                pids["worker" if n == 1 else f"worker-{n}"] = child.launch()
            if hook_process is not None:
                pids["hook"] = hook_process.launch()
            if relay_process is not None:
                pids["relay"] = relay_process.launch()
            async with asyncio.timeout(CHILD_STARTUP_TIMEOUT_SECONDS):
                if relay_process is not None:
                    await relay_process.wait_for_line("relay ready", poll=0.05)
                for child in children:
                    await child.wait_for_line(WORKER_READY_LINE, poll=0.05)
                if hook_process is not None:
                    await ports.wait_for_http_async(
                        f"http://{ports.LOOPBACK}:{hook_port}/healthz",
                        alive=lambda: hook_process.is_running,
                    )
            temporal = await connect_temporal(settings)
            pool = await create_pool(database_url)
            client = CancellationClient(
                temporal, StoreRepository(pool), task_queue=settings.task_queue, pool=None
            )
            yield Batch(
                name=name,
                settings=settings,
                client=client,
                pool=pool,
                meter=Meter(pids),
                workers=children,
                shop_id=shop_id,
                hook_url=f"http://{ports.LOOPBACK}:{hook_port}" if hook else None,
                hook_token=hook_token if hook else None,
                pids=pids,
            )
        finally:
            if pool is not None:
                await pool.close()
            if relay_process is not None:
                await asyncio.to_thread(relay_process.stop, OTHER_STOP_TIMEOUT_SECONDS)
            await asyncio.to_thread(self._stop_batch, children, hook_process, server)

    @staticmethod
    def _stop_batch(
        workers: list[ChildProcess], hook: ChildProcess | None, server: DevServer
    ) -> None:
        if hook is not None:
            hook.stop(OTHER_STOP_TIMEOUT_SECONDS)
        for worker in workers:
            worker.stop(WORKER_STOP_TIMEOUT_SECONDS)
        server.stop()

    def _child_env(self, env_vars: Mapping[str, str]) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("TEMPORAL_") and name not in _PROJECT_VARIABLES
        }
        env.update(env_vars)
        # Lines reach the log as they are written, so a crash leaves its traceback behind.
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def remove_work_dir(self) -> None:
        """Delete the scratch folder (logs included); call after :meth:`stop`."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


async def gather_limited(concurrency: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    """Run ``jobs`` with at most ``concurrency`` at a time."""
    pending = iter(jobs)

    async def lane() -> None:
        for job in pending:
            await job()

    await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, len(jobs))))))


def run_reported(
    work: Coroutine[Any, Any, dict[str, Any]], log: Callable[[str], None]
) -> dict[str, Any] | int:
    """Run ``work`` to its report; SIGINT or SIGTERM cancel it, so every process it started gets
    stopped. Without a report, the exit status after saying why through ``log``: 130 when
    interrupted, 1 when it failed."""
    try:
        return asyncio.run(_until_signalled(work))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; every process it started was stopped")
        return 130
    except Exception as error:
        log(f"failed: {type(error).__name__}: {error}")
        return 1


async def _until_signalled(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    return await task


def http_client(concurrency: int) -> httpx.AsyncClient:
    """An HTTP client for the hook: enough connections for every lane, no proxies."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0),
        limits=httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency),
        trust_env=False,
    )
