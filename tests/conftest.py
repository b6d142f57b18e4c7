"""Real servers for the tests: embedded PostgreSQL, the provider sandbox and both Temporal servers.

Every fixture here is session-scoped and lazy: a server starts the first time a test asks for it
and stops when the session ends, so the domain and sandbox unit tests pay for none of them. Each
server listens on 127.0.0.1 on a port the kernel picked, and is stopped by its process id.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

REPO_ROOT = Path(__file__).resolve().parent.parent
# Plain `pytest` puts only tests/ on sys.path (there is no tests/__init__.py), and the project's
# packages live in the repository root.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from activities.database import create_pool  # noqa: E402 (needs the sys.path line above)
from activities.provider_client import PaymentProviderClient  # noqa: E402 (same)
from domain.cancellation import (  # noqa: E402 (same)
    AcceptInput,
    Channel,
    InitiatedBy,
    ReasonCode,
    StartCancellationInput,
)
from domain.order import OrderDocument, OrderItem, Tender, TenderKind  # noqa: E402 (same)
from tools import ports, processes, temporal_server  # noqa: E402 (same)
from tools.embedded_postgres import EmbeddedPostgres  # noqa: E402 (same)

# -- tiers ----------------------------------------------------------------------------------------

SERVER_FIXTURES = frozenset(
    {
        "postgres",
        "database_url",
        "fresh_database_url",
        "provider_sandbox",
        "provider_url",
        "time_skipping_env",
        "dev_env",
    }
)
"""Fixtures that start a real server: a test that uses one is an integration test."""
INTEGRATION_FOLDERS = ("workflows", "http", "stripe", "bulk", "provider_sandbox")
"""Folders whose tests all run against servers or processes of their own."""
INTEGRATION_MODULES = (
    "test_devstack.py",
    "test_bench.py",
    "test_bench_bulk.py",
    "test_chaos.py",
    "test_relay.py",
    "test_cli.py",
    "test_layout.py",
    "test_infrastructure.py",
)
"""Modules elsewhere that start processes (a dev stack, a benchmark, a wheel build)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration tier, so ``scripts/test -m "not integration"`` runs the fast one."""
    for item in items:
        path = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests")
        if (
            SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
            or path.parts[0] in INTEGRATION_FOLDERS
            or path.name in INTEGRATION_MODULES
        ):
            item.add_marker(pytest.mark.integration)


# A cold CI machine may need a while to start a Python service; a healthy one answers in ~1 s.
SANDBOX_STARTUP_TIMEOUT_SECONDS = 30.0
# SIGTERM lets the sandbox close its SQLite file; it has no work worth waiting longer for.
SANDBOX_STOP_TIMEOUT_SECONDS = 10.0


def _scratch_dir(prefix: str) -> Path:
    # Not pytest's tmp_path: as root, PostgreSQL runs as another user, who must be able to enter
    # every parent folder, and pytest keeps its base folder private (mode 0700).
    return Path(tempfile.mkdtemp(prefix=prefix))


# -- orders --------------------------------------------------------------------------------------


def order_document(
    items: list[tuple[str, int, int]],
    tenders: list[tuple[TenderKind, int, str | None]],
    **fields: Any,
) -> OrderDocument:
    """An order whose items ``i1``, ``i2``… are ``(sku, quantity, unit price)`` and whose
    tenders ``t1``, ``t2``… are ``(kind, amount, payment id)``; ``fields`` give the rest."""
    return OrderDocument(
        items=[
            OrderItem(item_id=f"i{n}", sku=sku, quantity=q, unit_price=p)
            for n, (sku, q, p) in enumerate(items, start=1)
        ],
        tenders=[
            Tender(tender_id=f"t{n}", kind=kind, amount=amount, payment_id=payment_id)
            for n, (kind, amount, payment_id) in enumerate(tenders, start=1)
        ],
        **fields,
    )


def sold_out_start(cancellation_id: str, shop_id: str, order_id: str) -> StartCancellationInput:
    """What a merchant's start from the admin, accepted at once as sold out (a bulk job's
    start), gives the workflow."""
    return StartCancellationInput(
        cancellation_id=cancellation_id,
        seq=1,
        shop_id=shop_id,
        order_id=order_id,
        initiated_by=InitiatedBy.MERCHANT,
        channel=Channel.ADMIN,
        reason_code=ReasonCode.SOLD_OUT,
        accept=AcceptInput(reason_code=ReasonCode.SOLD_OUT),
        actor="merchant",
    )


# -- PostgreSQL ----------------------------------------------------------------------------------


@asynccontextmanager
async def stock_writes_failing_with(
    db: asyncpg.Pool | asyncpg.Connection,
    shop_id: str,
    sqlstate: str,
    message: str = "injected outage",
) -> AsyncIterator[None]:
    """PostgreSQL itself refuses the shop's stock writes with ``sqlstate`` (a trigger): the
    real error through the real wire protocol, for this shop only."""
    name = f"outage_{uuid.uuid4().hex[:12]}"
    await db.execute(
        f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '{sqlstate}'; END $$;
            CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON stock FOR EACH ROW
              WHEN (NEW.shop_id = '{shop_id}') EXECUTE FUNCTION {name}();"""
    )
    try:
        yield
    finally:
        await db.execute(f"DROP TRIGGER {name} ON stock; DROP FUNCTION {name}();")


@contextmanager
def running_postgres(prefix: str) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL server in a new scratch folder named from ``prefix`` (fsync off:
    fast, and thrown away afterwards with its folder)."""
    data_dir = _scratch_dir(prefix)
    server = EmbeddedPostgres(data_dir, ports.free_port(), durable=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """A running embedded PostgreSQL server shared by the session."""
    with running_postgres("test-postgres-") as server:
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(postgres: EmbeddedPostgres) -> str:
    """URL of a new database on :func:`postgres` with the project's migrations applied."""
    return await _new_migrated_database(postgres)


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database_url(postgres: EmbeddedPostgres) -> str:
    """URL of a brand-new migrated database for one test that must not share its store."""
    return await _new_migrated_database(postgres)


async def _new_migrated_database(postgres: EmbeddedPostgres) -> str:
    # Imported here, not at the top: collecting the tests must not depend on the store code.
    from activities.database import apply_migrations

    name = f"test_{uuid.uuid4().hex[:12]}"
    await postgres.create_database_async(name)
    dsn = postgres.dsn(name)
    await apply_migrations(dsn)
    return dsn


# -- the payment provider sandbox ----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSandbox:
    """A provider sandbox process started by :func:`run_provider_sandbox`."""

    url: str
    pid: int
    log_path: Path


@contextmanager
def run_provider_sandbox(
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    flags: Sequence[str] = (),
) -> Iterator[ProviderSandbox]:
    """Run ``python -m provider_sandbox`` on a free loopback port until the block ends.

    Args:
        webhook_url: Where the sandbox posts its signed callbacks; None sends none.
        webhook_secret: The secret those callbacks are signed with.
        flags: More command-line flags: a real provider's rules made fast for a test, e.g.
            ``["--clock-speed", "3600"]`` or ``["--idempotency-retention-seconds", "5"]``
            (``python -m provider_sandbox -h``).
    """
    work_dir = _scratch_dir("test-sandbox-")
    port = ports.free_port()
    command = [
        sys.executable,
        "-m",
        "provider_sandbox",
        "--host",
        ports.LOOPBACK,
        "--port",
        str(port),
        "--db",
        str(work_dir / "sandbox.sqlite3"),
    ]
    # Webhook settings: tests of the asynchronous refund path pass their admin hook's URL here.
    if webhook_url is not None:
        command += ["--webhook-url", webhook_url]
    if webhook_secret is not None:
        command += ["--webhook-secret", webhook_secret]
    command += flags
    log_path = work_dir / "sandbox.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://{ports.LOOPBACK}:{port}"
    try:
        try:
            ports.wait_for_http(
                f"{url}/healthz",
                SANDBOX_STARTUP_TIMEOUT_SECONDS,
                alive=lambda: process.poll() is None,
            )
        except (TimeoutError, RuntimeError) as error:
            output = log_path.read_text(errors="replace")
            raise RuntimeError(f"{error}; the sandbox printed:\n{output}") from error
        yield ProviderSandbox(url=url, pid=process.pid, log_path=log_path)
    finally:
        _terminate(process, SANDBOX_STOP_TIMEOUT_SECONDS)
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def provider_sandbox() -> Iterator[ProviderSandbox]:
    """The payment provider sandbox as a real process, without webhooks."""
    with run_provider_sandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def provider_url(provider_sandbox: ProviderSandbox) -> str:
    """Base URL of :func:`provider_sandbox`, e.g. ``http://127.0.0.1:40123``."""
    return provider_sandbox.url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def provider(provider_url: str) -> AsyncIterator[PaymentProviderClient]:
    """A client of the sandbox, for the activities and for the tests' own checks."""
    client = PaymentProviderClient(provider_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The tests' own pool on the migrated test database, to set up and check what changed."""
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    processes.stop(process, timeout)


# -- Temporal ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, with our search attributes and the pydantic converter.

    The SDK gives the server 5 s to answer; a machine busy with other servers can miss that
    once, so a start that times out is tried again on a new port (at most three times).
    """
    for attempt in range(3):
        try:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=temporal_server.test_server_path(),
                data_converter=pydantic_data_converter,
                port=ports.free_port(),
            )
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        await temporal_server.register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (in-memory SQLite, no UI), with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_server.temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=temporal_server.search_attribute_keys(),
        ip=ports.LOOPBACK,
        port=ports.free_port(),
        ui=False,
        # Warnings at shutdown ("context canceled", dial errors) would clutter every test report.
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()
