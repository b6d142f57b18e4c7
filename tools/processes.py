"""Child processes of the tooling, started, watched and stopped in one way.

Every server the dev stack, the benchmark, the chaos run and the tests start (the sandbox,
the worker, the hook, the relay, Temporal, localstripe) is a child process stopped by its
own process id: a polite signal first (SIGTERM, or what the server takes as one), then
SIGKILL when it is still up after a timeout. :func:`stop` is that rule;
:class:`ChildProcess` adds a log file and a launch for Python children; :class:`AsyncServer`
is ``async with`` for a server the tooling runs (PostgreSQL, Temporal), :class:`BlockingServer`
one whose stop blocks.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

REPO_ROOT = Path(__file__).resolve().parent.parent


def stop(
    process: subprocess.Popen[bytes] | None,
    timeout: float,
    *,
    polite: signal.Signals = signal.SIGTERM,
) -> None:
    """``polite``, then SIGKILL after ``timeout``; safe when it already ended (or is None)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, polite)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def exclusive_lock(path: Path) -> BinaryIO | None:
    """``path`` opened and locked (``flock``, exclusive, without waiting); None when another
    process holds the lock. The lock lasts while the file stays open, and the kernel drops it
    when its process dies, however it dies."""
    lock_file = path.open("ab")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        return None
    return lock_file


LOG_TAIL_LINES = 20


def sandbox_command(host: str, port: int, db: Path, *options: str) -> list[str]:
    """``python -m provider_sandbox`` on ``host:port`` over the SQLite file ``db``, plus
    ``options``."""
    command = [sys.executable, "-m", "provider_sandbox", "--host", host, "--port", str(port)]
    return [*command, "--db", str(db), *options]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` of a child's log, indented, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) or "  (empty log)"


def exit_text(code: int | None, *, status: str = "status") -> str:
    """How a child ended, from its exit code: ``killed by SIGKILL``, ``{status} 3``, or
    ``still running`` (None)."""
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"{status} {code}"


class ChildProcess:
    """A Python child (sandbox, worker, hook, relay) with its output appended to one log."""

    def __init__(
        self, name: str, command: list[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def launch(self) -> int:
        """Start the process and return its id."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C in the terminal reaches the whole process group; the stack stops its
                # children itself, in order (the worker drains before Temporal goes away).
                start_new_session=True,
            )
        return self._process.pid

    @property
    def is_running(self) -> bool:
        """Whether the process still runs."""
        return self._process is not None and self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit status once it ended, else None."""
        return None if self._process is None else self._process.poll()

    def output_since_launch(self) -> str:
        """What the process wrote to its log in this run."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_line(self, line: str, poll: float = 0.1) -> None:
        """Wait until the process has written ``line`` since its launch; RuntimeError (with
        the end of its output) when it exits first."""
        while line not in self.output_since_launch():
            if not self.is_running:
                raise RuntimeError(
                    f"the {self.name} exited during start-up; see {self.log_path}:\n"
                    + self.output_since_launch()[-2000:]
                )
            await asyncio.sleep(poll)

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe when it already ended."""
        stop(self._process, timeout)


class AsyncServer(abc.ABC):
    """``async with``: :meth:`start_async` on the way in, :meth:`stop_async` on the way out."""

    @abc.abstractmethod
    async def start_async(self) -> None:
        """Start the server and return once it serves."""

    @abc.abstractmethod
    async def stop_async(self) -> None:
        """Stop the server; safe when it already ended."""

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop_async()


class BlockingServer(AsyncServer):
    """An :class:`AsyncServer` whose stop blocks (signal, then wait for the process): it runs
    in a worker thread, so the event loop keeps running meanwhile."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server and wait for it; safe when it already ended."""

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)
