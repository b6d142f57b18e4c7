"""The test servers themselves: each fixture in conftest starts something real that works."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from temporalio import workflow

# The workflow sandbox re-imports this module; the rest is no workflow code and passes through.
with workflow.unsafe.imports_passed_through():
    import asyncpg
    import httpx
    import pydantic
    import pytest
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from domain import contract
    from tools import ports, temporal_server
    from tools.embedded_postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

SHOP_ID = SearchAttributeKey.for_keyword(contract.SA_SHOP_ID)
CANCELLATION_STATUS = SearchAttributeKey.for_keyword(contract.SA_CANCELLATION_STATUS)
REFUND_AMOUNT = SearchAttributeKey.for_int(contract.SA_REFUND_AMOUNT)


class NapInput(pydantic.BaseModel):
    """How long the probe workflow sleeps."""

    sleep: timedelta


class NapResult(pydantic.BaseModel):
    """What the probe workflow saw."""

    slept: timedelta


@workflow.defn
class NapWorkflow:
    """Upserts search attributes, sleeps on a durable timer and reports workflow time passed."""

    @workflow.run
    async def run(self, nap: NapInput) -> NapResult:
        began = workflow.now()
        workflow.upsert_search_attributes(
            [CANCELLATION_STATUS.value_set("requested"), REFUND_AMOUNT.value_set(1250)]
        )
        await workflow.sleep(nap.sleep)
        return NapResult(slept=workflow.now() - began)


async def _run_nap(client: Client, sleep: timedelta) -> tuple[NapResult, TypedSearchAttributes]:
    task_queue = f"infra-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue, workflows=[NapWorkflow]):
        handle = await client.start_workflow(
            NapWorkflow.run,
            NapInput(sleep=sleep),
            id=f"nap-{uuid.uuid4()}",
            task_queue=task_queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(SHOP_ID, "demo-shop")]),
        )
        result = await handle.result()
        description = await handle.describe()
    return result, description.typed_search_attributes


class TestPostgres:
    async def test_database_url_points_to_a_migrated_database(self, database_url: str) -> None:
        """The session database answers queries and has the store tables."""
        connection = await asyncpg.connect(database_url)
        try:
            assert await connection.fetchval("SELECT 40 + 2") == 42
            assert await connection.fetchval("SELECT count(*) FROM schema_migrations") >= 1
            assert await connection.fetchval("SELECT to_regclass('public.orders')") is not None
        finally:
            await connection.close()

    async def test_lookups_by_cancellation_are_indexed(self, fresh_database_url: str) -> None:
        """Every opening sums what the order's earlier cancellations refunded: with many
        refund lines in the store that must be an index lookup, not a scan of them all."""
        connection = await asyncpg.connect(fresh_database_url)
        try:
            await connection.execute(
                "INSERT INTO shops (shop_id) VALUES ('s');"
                "INSERT INTO orders (shop_id, order_id, customer_id, currency, status,"
                " shipping_fee) SELECT 's', 'o' || n, 'c', 'KRW', 'paid', 0"
                " FROM generate_series(1, 2000) n;"
                "INSERT INTO cancellations (cancellation_id, shop_id, order_id, seq, status,"
                " initiated_by, channel, currency, view, created_at, updated_at)"
                " SELECT 'c' || n, 's', 'o' || n, 1, 'canceled', 'customer', 'my_account',"
                " 'KRW', '{}', now(), now() FROM generate_series(1, 2000) n;"
                "INSERT INTO refund_lines (refund_id, cancellation_id, tender_id, tender_kind,"
                " method, channel, amount, status) SELECT 'r' || n, 'c' || n, 't1', 'card',"
                " 'original', 'provider', 100, 'succeeded' FROM generate_series(1, 2000) n;"
                "ANALYZE"
            )
            plan = "\n".join(
                r[0]
                for r in await connection.fetch(
                    "EXPLAIN SELECT r.tender_id, sum(r.amount) FROM refund_lines r"
                    " JOIN cancellations c USING (cancellation_id)"
                    " WHERE c.shop_id='s' AND c.order_id='o7' AND c.cancellation_id <> 'x'"
                    " AND c.status = 'canceled' AND r.status = 'succeeded' GROUP BY r.tender_id"
                )
            )
            assert "Seq Scan on refund_lines" not in plan, plan
            assert "refund_lines_by_cancellation" in plan, plan
        finally:
            await connection.close()

    async def test_fresh_database_url_is_a_separate_migrated_database(
        self, database_url: str, fresh_database_url: str
    ) -> None:
        assert fresh_database_url != database_url
        connection = await asyncpg.connect(fresh_database_url)
        try:
            assert await connection.fetchval("SELECT to_regclass('public.orders')") is not None
        finally:
            await connection.close()

    async def test_create_database_is_idempotent(self, postgres: EmbeddedPostgres) -> None:
        postgres.create_database("twice")
        postgres.create_database("twice")
        await postgres.create_database_async("twice")
        connection = await asyncpg.connect(postgres.dsn("twice"))
        try:
            assert await connection.fetchval("SELECT current_database()") == "twice"
        finally:
            await connection.close()

    async def test_data_survives_a_restart_on_the_same_data_dir(self, data_dir: Path) -> None:
        """Stopping and starting again, even on another port, keeps what was committed."""
        first = EmbeddedPostgres(data_dir, ports.free_port(), durable=False)
        with first:
            connection = await asyncpg.connect(first.dsn())
            await connection.execute("CREATE TABLE kept (note text)")
            await connection.execute("INSERT INTO kept VALUES ('still here')")
            await connection.close()
        assert not first.is_running

        second = EmbeddedPostgres(data_dir, ports.free_port(), durable=False)
        with second:
            connection = await asyncpg.connect(second.dsn())
            assert await connection.fetchval("SELECT note FROM kept") == "still here"
            await connection.close()

    async def test_restart_after_the_server_was_killed(self, data_dir: Path) -> None:
        """A SIGKILLed server leaves its postmaster.pid behind; the next start recovers its data.

        Durable mode: without synchronous_commit a kill may lose the last commits.
        """
        first = EmbeddedPostgres(data_dir, ports.free_port())
        first.start()
        connection = await asyncpg.connect(first.dsn())
        await connection.execute("CREATE TABLE kept (note text)")
        await connection.close()
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        first.stop()
        assert (data_dir / "pgdata" / "postmaster.pid").exists()

        with EmbeddedPostgres(data_dir, ports.free_port()) as second:
            connection = await asyncpg.connect(second.dsn())
            assert await connection.fetchval("SELECT count(*) FROM kept") == 0
            await connection.close()

    def test_second_server_on_the_same_data_dir_is_refused(
        self, postgres: EmbeddedPostgres
    ) -> None:
        intruder = EmbeddedPostgres(postgres.data_dir, ports.free_port())
        with pytest.raises(RuntimeError, match="in use"):
            intruder.start()
        assert postgres.is_running


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """An empty folder that the PostgreSQL user can reach (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="test-postgres-restart-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class TestProviderSandbox:
    async def test_sandbox_answers_healthz(self, provider_url: str) -> None:
        async with httpx.AsyncClient(base_url=provider_url, trust_env=False) as client:
            response = await client.get("/healthz")
        assert response.status_code == 200


class TestTemporal:
    async def test_time_skipping_server_skips_a_two_day_timer(
        self, time_skipping_env: WorkflowEnvironment
    ) -> None:
        """Two days of workflow time pass in seconds, and upserted search attributes are kept."""
        started = time.monotonic()
        result, attributes = await _run_nap(time_skipping_env.client, timedelta(days=2))
        assert result.slept >= timedelta(days=2)
        assert time.monotonic() - started < 30
        assert attributes.get(SHOP_ID) == "demo-shop"
        assert attributes.get(CANCELLATION_STATUS) == "requested"
        assert attributes.get(REFUND_AMOUNT) == 1250

    async def test_dev_server_runs_a_workflow_with_search_attributes(
        self, dev_env: WorkflowEnvironment
    ) -> None:
        result, attributes = await _run_nap(dev_env.client, timedelta(milliseconds=10))
        assert result.slept >= timedelta(milliseconds=10)
        assert attributes.get(SHOP_ID) == "demo-shop"
        assert attributes.get(CANCELLATION_STATUS) == "requested"
        assert attributes.get(REFUND_AMOUNT) == 1250

    async def test_dev_server_knows_all_our_search_attributes(
        self, dev_env: WorkflowEnvironment
    ) -> None:
        registered_before = await _custom_attribute_names(dev_env.client)
        await temporal_server.register_search_attributes(dev_env.client)
        assert set(temporal_server.SEARCH_ATTRIBUTES) <= registered_before
        assert await _custom_attribute_names(dev_env.client) == registered_before


class TestDevServer:
    async def test_dev_server_keeps_workflows_in_its_file_across_restarts(
        self, tmp_path: Path
    ) -> None:
        """The dev stack's Temporal keeps runs in SQLite, serves its UI, knows our attributes."""
        db_file = tmp_path / "temporal.sqlite"
        workflow_id = f"kept-{uuid.uuid4()}"
        async with temporal_server.DevServer(
            port=ports.free_port(),
            ui_port=ports.free_port(),
            db_filename=db_file,
            log_path=tmp_path / "temporal.log",
        ) as server:
            assert server.ui_url is not None
            async with httpx.AsyncClient(trust_env=False) as http:
                assert (await http.get(server.ui_url)).status_code == 200
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            assert set(temporal_server.SEARCH_ATTRIBUTES) <= await _custom_attribute_names(client)
            # No worker polls this queue, so the run just waits for the restart.
            await client.start_workflow(
                NapWorkflow.run,
                NapInput(sleep=timedelta(days=1)),
                id=workflow_id,
                task_queue=f"nobody-{uuid.uuid4()}",
            )

        async with temporal_server.DevServer(port=ports.free_port(), db_filename=db_file) as server:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            description = await client.get_workflow_handle(workflow_id).describe()
            assert description.status == WorkflowExecutionStatus.RUNNING


async def _custom_attribute_names(client: Client) -> set[str]:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return set(listed.custom_attributes)
