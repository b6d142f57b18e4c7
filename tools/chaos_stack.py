"""The chaos run's own stack, and the faults it suffers: kill, restart, misbehave.

Everything runs as in the dev stack (:mod:`tools.devstack`), from the same pieces: the
embedded PostgreSQL (:class:`~tools.embedded_postgres.EmbeddedPostgres`), Temporal's dev server
(:class:`~tools.temporal_server.DevServer`), and :class:`~tools.devstack.ChildProcess` for
``python -m provider_sandbox``, ``python worker.py`` and the admin hook ``python -m starter.http``.
The differences are what a chaos run needs:

- a throwaway state folder (a :class:`~tools.devstack.StateDir`) and free loopback ports, never
  the dev stack's defaults, so a developer's own stack keeps running next to it;
- the sandbox sends its signed webhooks to the hook (`refund.succeeded`, `refund.failed`),
  late, a third of them twice and out of order, as a real provider redelivers them;
- PostgreSQL runs without fsync: the faults here kill processes, not the machine, and the
  operating system keeps every write a killed server made;
- Temporal keeps its state in one SQLite file (WAL), so a killed server restarts with every
  run, timer and task queue it had.

Faults (:class:`FaultKind`) run one at a time and each leaves the stack whole again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from activities.database import apply_migrations
from tools import ports
from tools.devstack import (
    _STATE_MARKER_ENV,
    NAMESPACE,
    POSTGRES_STARTUP_TIMEOUT_SECONDS,
    SANDBOX_STARTUP_TIMEOUT_SECONDS,
    SANDBOX_STOP_TIMEOUT_SECONDS,
    STORE_DATABASE,
    WORKER_READY_LINE,
    WORKER_STARTUP_TIMEOUT_SECONDS,
    WORKER_STOP_TIMEOUT_SECONDS,
    ChildProcess,
    StateDir,
)
from tools.embedded_postgres import EmbeddedPostgres
from tools.processes import exit_text, log_tail, sandbox_command
from tools.temporal_server import DevServer

REPO_ROOT = Path(__file__).resolve().parent.parent


HOOK_STARTUP_TIMEOUT_SECONDS = 60.0
HOOK_STOP_TIMEOUT_SECONDS = 10.0
WEBHOOK_PATH = "/v1/provider/webhooks"

WEBHOOK_DELAY_SECONDS = 0.2
WEBHOOK_DUPLICATE_RATE = 0.3
WEBHOOK_SHUFFLE_SECONDS = 2.0
"""The sandbox delivers every webhook late, a third of them twice, in shuffled order: a real
provider's redeliveries, which the hook must act on once (event id) in any order."""
STALE_SIGNATURE_SECONDS = 600
"""Twice the hook's 5-minute signature tolerance: a captured delivery replayed this late."""
KEY_EXPIRY_JUMP_SECONDS = 25 * 3600
"""Past the sandbox's 24 h idempotency-key retention (Stripe's): every key in flight expires."""
PROVIDER_CLIENT_TIMEOUT_SECONDS = 10.0
"""The product's provider client gives up on an answer after this long (provider_client.py)."""

# The project's variables: the children must talk to this stack only, whatever the shell says
# (Temporal's own TEMPORAL_* variables are dropped as a prefix).
_PROJECT_VARIABLES = frozenset(
    {
        "DATABASE_URL",
        "PAYMENT_PROVIDER_URL",
        "PAYMENT_PROVIDER_WEBHOOK_SECRET",
        "PAYMENT_PROVIDER_WEBHOOK_URL",
        "PAYMENT_PROVIDER_DB",
        "ADMIN_HOOK_PORT",
        "ADMIN_HOOK_TOKENS",
        "PAYLOAD_ENCRYPTION_KEY",
        "WORKER_METRICS_PORT",
        "TASK_QUEUE",
        "PROVIDER_TASK_QUEUE",
        _STATE_MARKER_ENV,
    }
)


class ChaosStackError(RuntimeError):
    """A part of the chaos stack did not start (again); the message has its log's tail."""


class FaultKind(StrEnum):
    """The faults a chaos run injects."""

    WORKER_KILL = "worker_kill"
    """SIGKILL the worker and the webhook relay (no graceful shutdown), then start new ones."""
    SANDBOX_RESTART = "sandbox_restart"
    """Stop the provider sandbox with SIGTERM or SIGKILL and start it on the same SQLite file."""
    POSTGRES_RESTART = "postgres_restart"
    """Stop PostgreSQL (fast shutdown: every session is cut) and start it on the same data."""
    PROVIDER_FAULTS = "provider_faults"
    """Turn on the sandbox's fault injection (503s, hangs, effect-then-503) for a few seconds."""
    HOOK_KILL = "hook_kill"
    """SIGKILL the admin hook mid-request, then start a new one on the same port."""
    TEMPORAL_RESTART = "temporal_restart"
    """SIGKILL the Temporal dev server and start it again on the same SQLite file and port."""
    KEY_EXPIRY = "key_expiry"
    """Effect-then-503 answers, then provider time jumps 25 h: every retry meets an expired key."""
    KEY_IN_USE = "key_in_use"
    """Slow answers that still apply, held past the client's 10 s timeout: retries get 409."""
    WEBHOOK_REPLAY = "webhook_replay"
    """An older ``refund.succeeded`` of a refund reversed since, delivered late (signed now,
    three times at once), and the same body with a stale timestamp and with a forged one."""


@dataclass(frozen=True)
class InjectedFault:
    """One fault as it happened."""

    kind: FaultKind
    at: float
    """Seconds since the run began."""
    detail: str
    seconds: float
    """How long until the stack was whole again."""
    broke: str | None = None
    """What the stack did wrong while the fault was on (a stale or forged webhook taken)."""


@dataclass(frozen=True)
class ChaosEndpoints:
    """Where the parts of a chaos stack answer."""

    temporal_address: str
    database_url: str
    sandbox_url: str
    hook_url: str


@dataclass
class ChaosStack:
    """PostgreSQL, Temporal, the sandbox, the worker and the admin hook, in ``root``.

    Args:
        root: An empty folder (or one this class made before); logs go to ``root/logs``.
        shop_id: The shop whose bearer token the hook accepts.
        token: That token.
        webhook_secret: Signs the sandbox's webhooks; the hook checks them with it.
        env: The environment the children start from (the project's variables are replaced).
    """

    root: Path
    shop_id: str
    token: str
    webhook_secret: str
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self) -> None:
        self.state = StateDir(self.root)
        taken: set[int] = set()
        self._ports = {
            name: ports.free_port_off_dev_stack(taken)
            for name in ("temporal", "postgres", "sandbox", "hook")
        }
        host = ports.LOOPBACK
        self.postgres = EmbeddedPostgres(
            self.state.postgres, self._ports["postgres"], durable=False
        )
        self.postgres.log_path = self.state.logs / "postgres.log"
        self.temporal = DevServer(
            port=self._ports["temporal"],
            namespace=NAMESPACE,
            db_filename=self.state.temporal_db,
            log_path=self.state.logs / "temporal.log",
        )
        hook_url = f"http://{host}:{self._ports['hook']}"
        self.endpoints = ChaosEndpoints(
            temporal_address=f"{host}:{self._ports['temporal']}",
            database_url=self.postgres.dsn(STORE_DATABASE),
            sandbox_url=f"http://{host}:{self._ports['sandbox']}",
            hook_url=hook_url,
        )
        env = self._child_env()
        python = sys.executable
        self.sandbox = ChildProcess(
            "sandbox",
            sandbox_command(
                host,
                self._ports["sandbox"],
                self.state.sandbox_db,
                "--webhook-url",
                hook_url + WEBHOOK_PATH,
                "--webhook-delay-seconds",
                str(WEBHOOK_DELAY_SECONDS),
                "--webhook-duplicate-rate",
                str(WEBHOOK_DUPLICATE_RATE),
                "--webhook-shuffle-seconds",
                str(WEBHOOK_SHUFFLE_SECONDS),
            ),
            env,
            self.state.logs / "sandbox.log",
        )
        self.worker = ChildProcess(
            "worker", [python, str(REPO_ROOT / "worker.py")], env, self.state.logs / "worker.log"
        )
        self.hook = ChildProcess(
            "hook", [python, "-m", "starter.http"], env, self.state.logs / "hook.log"
        )
        self.relay = ChildProcess(
            "relay", [python, "-m", "starter.relay"], env, self.state.logs / "relay.log"
        )
        self._pids: dict[str, int] = {}
        self._claimed = False

    def _child_env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in self.env.items()
            if not name.startswith("TEMPORAL_") and name not in _PROJECT_VARIABLES
        }
        env.update(
            {
                "DATABASE_URL": self.endpoints.database_url,
                "TEMPORAL_ADDRESS": self.endpoints.temporal_address,
                "TEMPORAL_NAMESPACE": NAMESPACE,
                "PAYMENT_PROVIDER_URL": self.endpoints.sandbox_url,
                # The environment, not the command line: command lines are visible to everyone.
                "PAYMENT_PROVIDER_WEBHOOK_SECRET": self.webhook_secret,
                "ADMIN_HOOK_PORT": str(self._ports["hook"]),
                "ADMIN_HOOK_TOKENS": f"{self.shop_id}:{self.token}",
                # The run's webhook receiver listens on loopback; a short timeout keeps the
                # claim a killed relay leaves behind short too (timeout + 5 s).
                "WEBHOOKS_ALLOW_HTTP": "1",
                "WEBHOOKS_TIMEOUT": "3",
                # Lets `python -m starter dev --state-dir <root>` stop orphans of a killed run.
                _STATE_MARKER_ENV: str(self.root),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # ------------------------------------------------------------------ starting and stopping

    async def start(self) -> None:
        """Start every part and wait until each answers.

        Raises:
            ChaosStackError: A part did not start; the message ends with its log's tail.
        """
        self.state.claim(fresh=True)
        self._claimed = True
        await asyncio.gather(self._start_postgres(), self._start_temporal(), self._start_sandbox())
        # The hook applies the migrations too; the worker and the hook must not race for them.
        await apply_migrations(self.endpoints.database_url)
        await asyncio.gather(self._start_worker(), self._start_hook(), self._start_relay())

    def stop(self) -> None:
        """Stop every part that runs, users first; safe to call twice."""
        if not self._claimed:
            return
        self.hook.stop(HOOK_STOP_TIMEOUT_SECONDS)
        self.relay.stop(HOOK_STOP_TIMEOUT_SECONDS)
        self.worker.stop(WORKER_STOP_TIMEOUT_SECONDS)
        self.sandbox.stop(SANDBOX_STOP_TIMEOUT_SECONDS)
        self.temporal.stop()
        self.postgres.stop()
        for name in ("hook", "relay", "worker", "sandbox", "temporal", "postgres"):
            self.state.forget_pid(name)
        self.state.release()
        self._claimed = False

    async def _start_postgres(self) -> None:
        await self._restart_postgres_process()
        await self.postgres.create_database_async(STORE_DATABASE)

    async def _restart_postgres_process(self) -> None:
        try:
            await asyncio.to_thread(self.postgres.start, POSTGRES_STARTUP_TIMEOUT_SECONDS)
        except RuntimeError as error:  # EmbeddedPostgresError, with the log's tail
            raise ChaosStackError(f"PostgreSQL did not start: {error}") from None
        if self.postgres.pid is not None:
            self.state.record_pid("postgres", self.postgres.pid)

    async def _start_temporal(self) -> None:
        try:
            await self.temporal.start()
        except (RuntimeError, TimeoutError) as error:
            raise ChaosStackError(
                f"Temporal did not start ({error or 'timed out'}); see {self.temporal.log_path}"
            ) from None
        if self.temporal.pid is not None:
            self.state.record_pid("temporal", self.temporal.pid)

    async def _start_sandbox(self) -> None:
        await self._launch_until(
            self.sandbox,
            SANDBOX_STARTUP_TIMEOUT_SECONDS,
            lambda: ports.wait_for_http_async(
                f"{self.endpoints.sandbox_url}/healthz", alive=lambda: self.sandbox.is_running
            ),
        )

    async def _start_worker(self) -> None:
        await self._launch_until(
            self.worker,
            WORKER_STARTUP_TIMEOUT_SECONDS,
            lambda: self.worker.wait_for_line(WORKER_READY_LINE),
        )

    async def _start_relay(self) -> None:
        await self._launch_until(
            self.relay,
            WORKER_STARTUP_TIMEOUT_SECONDS,
            lambda: self.relay.wait_for_line("relay ready"),
        )

    async def _start_hook(self) -> None:
        await self._launch_until(
            self.hook,
            HOOK_STARTUP_TIMEOUT_SECONDS,
            lambda: ports.wait_for_http_async(
                f"{self.endpoints.hook_url}/healthz", alive=lambda: self.hook.is_running
            ),
        )

    async def _launch_until(
        self, child: ChildProcess, within: float, ready: Callable[[], Awaitable[None]]
    ) -> None:
        pid = child.launch()
        self._pids[child.name] = pid
        self.state.record_pid(child.name, pid)
        try:
            async with asyncio.timeout(within):
                await ready()
        except (RuntimeError, TimeoutError):
            ended = exit_text(child.exit_code, status="exited with status")
            raise ChaosStackError(
                f"the {child.name} did not get ready ({ended}); "
                f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
            ) from None

    # ------------------------------------------------------------------ faults

    async def kill_worker(self, down_seconds: float) -> str:
        """SIGKILL the worker and the webhook relay: running activities are lost until their
        timeouts, deliveries in flight until their claims run out; restart both."""
        await asyncio.gather(
            self._kill(self.worker, signal.SIGKILL), self._kill(self.relay, signal.SIGKILL)
        )
        await asyncio.sleep(down_seconds)
        await asyncio.gather(self._start_worker(), self._start_relay())
        return f"SIGKILL, down {down_seconds:.1f} s"

    async def restart_sandbox(self, stop_signal: signal.Signals, down_seconds: float) -> str:
        """Stop the sandbox with ``stop_signal`` and start it again on the same database."""
        if stop_signal is signal.SIGTERM:
            await asyncio.to_thread(self.sandbox.stop, SANDBOX_STOP_TIMEOUT_SECONDS)
        else:
            await self._kill(self.sandbox, stop_signal)
        await asyncio.sleep(down_seconds)
        await self._start_sandbox()
        return f"{stop_signal.name}, down {down_seconds:.1f} s"

    async def restart_postgres(self, down_seconds: float) -> str:
        """Fast shutdown (every session cut, open transactions rolled back), then start again
        on the same data folder and port: every pool must reconnect by itself."""
        await asyncio.to_thread(self.postgres.stop)
        await asyncio.sleep(down_seconds)
        await self._restart_postgres_process()
        return f"fast shutdown, down {down_seconds:.1f} s"

    async def kill_hook(self, down_seconds: float) -> str:
        """SIGKILL the admin hook (requests in flight lose their answers and their claims'
        releases), then start a new one on the same port."""
        await self._kill(self.hook, signal.SIGKILL)
        await asyncio.sleep(down_seconds)
        await self._start_hook()
        return f"SIGKILL, down {down_seconds:.1f} s"

    async def restart_temporal(self, down_seconds: float) -> str:
        """SIGKILL the Temporal server (no clean close of its SQLite file), then start it
        again on the same file and port: workers, the hook and clients must reconnect."""
        pid = self.temporal.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(self.temporal.stop, 10.0)  # reaps the killed process
        await asyncio.sleep(down_seconds)
        await self._start_temporal()
        return f"SIGKILL, down {down_seconds:.1f} s"

    async def expire_keys(self, effect_then_503: float, before_jump: float) -> str:
        """Answer a share of POSTs with 503 after their effect, then jump provider time past
        the key retention: the retries of those requests reuse keys the provider forgot."""
        await self.put_provider_faults({"error_after_effect_rate": effect_then_503})
        try:
            await asyncio.sleep(before_jump)
            await self.advance_provider_clock(KEY_EXPIRY_JUMP_SECONDS)
            # The retries (1 s backoff) arrive after the jump.
            await asyncio.sleep(1.0)
        finally:
            await self.put_provider_faults({})
        return (
            f"error_after_effect_rate {effect_then_503:g} for {before_jump:.1f} s,"
            f" then +{KEY_EXPIRY_JUMP_SECONDS // 3600} h"
        )

    async def advance_provider_clock(self, seconds: float) -> None:
        """``POST /v1/clock/advance`` until the sandbox takes it."""
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.post(
                        f"{self.endpoints.sandbox_url}/v1/clock/advance", json={"seconds": seconds}
                    )
                    if answer.is_success:
                        return
                await asyncio.sleep(0.2)

    async def replay_webhook(
        self, payment_ids: Sequence[str], rng: random.Random
    ) -> tuple[str, str | None]:
        """Deliver an older event of a refund late and out of order, and replays of it.

        The refund is one the provider reversed (failed after success) when there is one,
        so the older ``refund.succeeded`` contradicts what the run was told last; else a
        succeeded one (the event then repeats the truth under a new event id). Answers
        what was sent and, separately, anything the hook should have refused but took.
        """
        async with httpx.AsyncClient(
            base_url=self.endpoints.sandbox_url, timeout=5.0, trust_env=False
        ) as sandbox:
            refund = await _pick_refund(sandbox, payment_ids, rng)
        if refund is None:
            return "no refund to replay yet", None
        was = refund["status"]
        event = {
            "id": f"evt_chaos_{rng.getrandbits(64):016x}",
            "type": "refund.succeeded",
            "created": refund["created_at"],
            "account": None,
            "refund": refund | {"status": "succeeded", "failure_code": None},
        }
        body = json.dumps(event).encode()
        url = self.endpoints.hook_url + WEBHOOK_PATH
        now = int(time.time())
        async with httpx.AsyncClient(timeout=15.0, trust_env=False) as hook:

            async def deliver(timestamp: int, secret: str) -> int | str:
                signature = _sign(body, secret, timestamp)
                try:
                    answer = await hook.post(
                        url,
                        content=body,
                        headers={"Content-Type": "application/json", "X-Signature": signature},
                    )
                except httpx.HTTPError as error:
                    return type(error).__name__
                return answer.status_code

            stale = await deliver(now - STALE_SIGNATURE_SECONDS, self.webhook_secret)
            forged = await deliver(now, self.webhook_secret + "x")
            fresh = await asyncio.gather(*(deliver(now, self.webhook_secret) for _ in range(3)))
        detail = (
            f"older refund.succeeded of {refund['id']} (now {was}): stale {stale},"
            f" forged {forged}, fresh x3 {'/'.join(str(f) for f in fresh)}"
        )
        taken = [name for name, got in (("stale", stale), ("forged", forged)) if got == 200]
        broke = f"{' and '.join(taken)} delivery answered 200: {detail}" if taken else None
        return detail, broke

    async def provider_faults(self, config: dict[str, float], seconds: float) -> str:
        """Turn on the sandbox's fault injection for ``seconds``, then off again."""
        await self.put_provider_faults(config)
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.put_provider_faults({})
        rates = ", ".join(f"{name} {value:g}" for name, value in config.items())
        return f"{rates} for {seconds:.1f} s"

    async def put_provider_faults(self, config: dict[str, float]) -> None:
        """``PUT /v1/faults`` until the sandbox takes it (it is never faulted itself)."""
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.put(f"{self.endpoints.sandbox_url}/v1/faults", json=config)
                    if answer.is_success:
                        return
                await asyncio.sleep(0.2)

    async def _kill(self, child: ChildProcess, stop_signal: signal.Signals) -> None:
        pid = self._pids.get(child.name)
        if pid is not None and child.is_running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stop_signal)
        # Reaps it (a SIGTERM to a process that is dying of SIGKILL changes nothing).
        await asyncio.to_thread(child.stop, 10.0)


async def inject(
    stack: ChaosStack,
    kind: FaultKind,
    rng: random.Random,
    began: float,
    payment_ids: Sequence[str] = (),
) -> InjectedFault:
    """Inject one fault of ``kind`` with random parameters; return once the stack is whole.

    ``payment_ids`` are the card payments made so far, newest last (for webhook replays).
    """
    at = time.monotonic() - began
    broke = None
    match kind:
        case FaultKind.WORKER_KILL:
            detail = await stack.kill_worker(rng.uniform(0.0, 2.0))
        case FaultKind.SANDBOX_RESTART:
            stop_signal = rng.choice([signal.SIGTERM, signal.SIGKILL])
            detail = await stack.restart_sandbox(stop_signal, rng.uniform(0.0, 1.5))
        case FaultKind.POSTGRES_RESTART:
            detail = await stack.restart_postgres(rng.uniform(0.2, 2.0))
        case FaultKind.PROVIDER_FAULTS:
            config = {
                "error_rate": round(rng.uniform(0.1, 0.4), 2),
                "hang_rate": round(rng.uniform(0.0, 0.15), 2),
                "error_after_effect_rate": round(rng.uniform(0.2, 0.5), 2),
                # Past the provider client's 10 s timeout, or just short of it.
                "hang_seconds": rng.choice([3.0, 12.0]),
            }
            detail = await stack.provider_faults(config, rng.uniform(2.0, 5.0))
        case FaultKind.HOOK_KILL:
            detail = await stack.kill_hook(rng.uniform(0.0, 1.5))
        case FaultKind.TEMPORAL_RESTART:
            detail = await stack.restart_temporal(rng.uniform(0.0, 2.0))
        case FaultKind.KEY_EXPIRY:
            detail = await stack.expire_keys(round(rng.uniform(0.3, 0.6), 2), rng.uniform(1.0, 3.0))
        case FaultKind.KEY_IN_USE:
            config = {
                "slow_rate": round(rng.uniform(0.3, 0.6), 2),
                # Past the client's timeout: its retry finds the key still in use (409).
                "hang_seconds": round(PROVIDER_CLIENT_TIMEOUT_SECONDS + rng.uniform(2.0, 5.0), 1),
            }
            detail = await stack.provider_faults(config, rng.uniform(2.0, 4.0))
        case FaultKind.WEBHOOK_REPLAY:
            detail, broke = await stack.replay_webhook(payment_ids, rng)
    return InjectedFault(kind, at, detail, time.monotonic() - began - at, broke)


async def _pick_refund(
    sandbox: httpx.AsyncClient, payment_ids: Sequence[str], rng: random.Random
) -> dict[str, Any] | None:
    """The newest reversed refund among the latest payments if any, else a succeeded one."""
    reversed_: list[dict[str, Any]] = []
    succeeded: list[dict[str, Any]] = []
    for payment_id in list(payment_ids)[-40:]:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            answer = await sandbox.get(f"/v1/payments/{payment_id}")
            payment = answer.json()
            if not answer.is_success:
                continue
            fails_after = payment["behavior"]["refund"] == "fail_after_success"
            listed = await sandbox.get(f"/v1/payments/{payment_id}/refunds")
            for refund in listed.json()["data"] if listed.is_success else []:
                if refund["status"] == "failed" and fails_after:
                    reversed_.append(refund)
                elif refund["status"] == "succeeded":
                    succeeded.append(refund)
    if reversed_:
        # The newest: its run is likeliest to be still waiting for the merchant.
        return reversed_[-1]
    return rng.choice(succeeded) if succeeded else None


def _sign(body: bytes, secret: str, timestamp: int) -> str:
    """The provider's ``X-Signature``: ``t=<unix seconds>,v1=<HMAC-SHA256 of "t.body">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"
