"""Helpers for the events tests: a real webhook receiver on loopback that checks every
signature with the third-party ``standardwebhooks`` package, and relays to run beside it.

The receiver runs ``http.server`` in its own thread, so a handler that hangs (a slow
receiver) blocks nothing of the tests' event loop, and it can go down and come back on
the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from activities.database import create_pool
from starter.relay import Relay, RelayConfig
from tools import ports

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Received:
    """One request the receiver took, with a valid signature."""

    path: str
    webhook_id: str
    body: dict[str, Any]
    at: float

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def cancellation_id(self) -> str:
        return str(self.body["data"]["cancellation"]["cancellation_id"])

    @property
    def sequence(self) -> int:
        return int(self.body["data"]["sequence"])


Behavior = Callable[[Received], int]
"""What the receiver answers to a verified request (it may sleep first: a slow receiver)."""
DROP = 0
"""A behavior's answer that closes the connection without any answer."""


class Receiver:
    """A webhook receiver on 127.0.0.1; one secret per path, registered by the test."""

    def __init__(self) -> None:
        self.port = ports.free_port()
        self.secrets: dict[str, str] = {}
        self.behavior: dict[str, Behavior] = {}
        self.received: list[Received] = []
        """Verified requests, including those answered with an error."""
        self.accepted: list[Received] = []
        """Verified requests answered 2xx."""
        self.unverified: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://{ports.LOOPBACK}:{self.port}/{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                path = self.path.lstrip("/")
                secret = receiver.secrets.get(path)
                try:
                    if secret is None:
                        raise WebhookVerificationError("no secret for this path")
                    document = Webhook(secret).verify(body, dict(self.headers.items()))
                except WebhookVerificationError as err:
                    with receiver._lock:
                        receiver.unverified.append(f"{path}: {err}")
                    self._answer(401)
                    return
                received = Received(path, self.headers["webhook-id"], document, time.time())
                with receiver._lock:
                    receiver.received.append(received)
                status = receiver.behavior.get(path, lambda _: 200)(received)
                if status == DROP:
                    self.close_connection = True  # no answer at all: the connection just ends
                    return
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.accepted.append(received)
                self._answer(status)

            def _answer(self, status: int) -> None:
                with contextlib.suppress(OSError):  # the relay gave up waiting
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((ports.LOOPBACK, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Go down: the port refuses connections until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, path: str, *, accepted: bool = True) -> list[Received]:
        with self._lock:
            return [r for r in (self.accepted if accepted else self.received) if r.path == path]

    async def wait_for(
        self, path: str, predicate: Callable[[list[Received]], bool], within: float = 20.0
    ) -> list[Received]:
        """Poll until ``predicate`` holds for the path's accepted requests."""
        deadline = time.monotonic() + within
        while True:
            got = self.of(path)
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                summary = [(r.type, r.sequence) for r in got]
                raise AssertionError(f"not received within {within}s; got {summary}")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


FAST_RETRIES = 0.0002
"""The retry schedule shrunk 5000 times: 1 ms, 60 ms, 0.36 s, 1.4 s, 3.6 s, 7.2 s, 7.2 s."""


def fast_config(**changes: Any) -> RelayConfig:
    """A relay that retries on a fast clock and polls often (tests)."""
    values: dict[str, Any] = {
        "concurrency": 8,
        "timeout": 1.0,
        "retry_scale": FAST_RETRIES,
        "retention": timedelta(days=7),
        "failed_retention": timedelta(days=30),
        "allow_loopback": True,
        "poll_interval": 0.2,
        "close_grace": timedelta(0),
    }
    return RelayConfig(**(values | changes))


@contextlib.asynccontextmanager
async def running_relay(dsn: str, config: RelayConfig | None = None) -> AsyncIterator[Relay]:
    """A relay in the tests' own event loop, stopped when the block ends."""
    pool = await create_pool(dsn)
    relay = Relay(dsn, pool, config or fast_config())
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await task
        await pool.close()


def start_relay_process(dsn: str, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """``python -m starter.relay`` as its own process (to kill it mid-delivery)."""
    environment = {
        **os.environ,
        "DATABASE_URL": dsn,
        "WEBHOOKS_ALLOW_HTTP": "1",
        "WEBHOOKS_TIMEOUT": "1",
        "WEBHOOKS_RETRY_SCALE": str(FAST_RETRIES),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "starter.relay"],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no chance to finish anything."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def events_of(received: list[Received]) -> dict[str, list[tuple[int, str]]]:
    """(sequence, type) per cancellation, in arrival order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for r in received:
        out.setdefault(r.cancellation_id, []).append((r.sequence, r.type))
    return out


def dumps(received: list[Received]) -> str:
    return json.dumps([(r.cancellation_id, r.sequence, r.type) for r in received])
