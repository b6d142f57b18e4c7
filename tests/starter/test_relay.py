"""The relay under faults: killed mid-delivery, the database restarted mid-delivery.

These run on a PostgreSQL of their own (restarting the shared one would disturb every
other test) with events written by :func:`~activities.events.record_events` itself, the
function the transitions call, so no workflow is needed to make them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from activities.database import apply_migrations, create_pool
from activities.events import EventStore, NewEvent, record_events
from domain.cancellation import CancellationStatus, CancellationView, Channel, InitiatedBy
from domain.events import EventType
from tests.conftest import running_postgres
from tests.webhook_receiver import (
    Receiver,
    events_of,
    fast_config,
    kill,
    running_receiver,
    running_relay,
    start_relay_process,
)
from tools.embedded_postgres import EmbeddedPostgres

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TYPES = [EventType.REQUESTED, EventType.ACCEPTED, EventType.COMPLETED]


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL these tests may stop and start."""
    with running_postgres("test-relay-postgres-") as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(own_postgres: EmbeddedPostgres) -> str:
    await own_postgres.create_database_async("relay")
    url = own_postgres.dsn("relay")
    await apply_migrations(url)
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn)
    yield pool
    await pool.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as value:
        yield value


def _view(shop_id: str, cancellation_id: str) -> CancellationView:
    return CancellationView(
        cancellation_id=cancellation_id,
        shop_id=shop_id,
        order_id="o1",
        workflow_id=cancellation_id,
        status=CancellationStatus.REQUESTED,
        order_status=None,
        initiated_by=InitiatedBy.CUSTOMER,
        channel=Channel.MY_ACCOUNT,
        reason_code=None,
        reason="",
    )


async def _transition(pool: asyncpg.Pool, shop_id: str, cancellation_id: str, n: int) -> None:
    """What a transition's transaction writes for events: the n-th event of the run."""
    async with pool.acquire() as conn, conn.transaction():
        await record_events(
            conn,
            shop_id,
            _view(shop_id, cancellation_id),
            [NewEvent(TYPES[n - 1], f"{cancellation_id}:{n}", datetime.now(UTC))],
        )


async def _subscribe(pool: asyncpg.Pool, receiver: Receiver, shop_id: str, path: str) -> None:
    _, secret = await EventStore(pool).put_endpoint(
        shop_id, "e1", receiver.url(path), ["cancellation.*"]
    )
    assert secret is not None
    receiver.secrets[path] = secret


def _hang_first_time(seconds: float):
    seen: set[str] = set()

    def behavior(received) -> int:
        if received.webhook_id not in seen:
            seen.add(received.webhook_id)
            time.sleep(seconds)
        return 200

    return behavior


async def test_killing_the_relay_mid_delivery_loses_nothing(pool, dsn, receiver, tmp_path):
    """SIGKILL while the receiver holds the first event: a new relay sends it again when the
    claim's lease ends (same webhook-id), then the rest, in order."""
    shop_id, cid = f"shop-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await _subscribe(pool, receiver, shop_id, "kill")
    receiver.behavior["kill"] = _hang_first_time(1.0)
    for n in (1, 2, 3):
        await _transition(pool, shop_id, cid, n)

    log = tmp_path / "relay.log"
    first = start_relay_process(dsn, log, WEBHOOKS_TIMEOUT="2")
    try:
        deadline = time.monotonic() + 20
        while not receiver.of("kill", accepted=False):
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.02)
        kill(first)  # mid-delivery: the receiver is still holding the request
        started_again = time.monotonic()
        second = start_relay_process(dsn, log, WEBHOOKS_TIMEOUT="2")
        try:
            got = await receiver.wait_for("kill", lambda r: len(r) == 4, within=30)
            deadline = time.monotonic() + 15
            while await _delivered(pool, shop_id) < 3:  # recorded after the receiver answered
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            kill(second)
    finally:
        kill(first)
    # The receiver took the first event while its sender died (it could not know), and took
    # it again from the second relay: a duplicate with the same webhook-id, then the rest.
    assert [(r.sequence, r.type) for r in got] == [(1, TYPES[0].value)] + [
        (n, t.value) for n, t in enumerate(TYPES, 1)
    ]
    assert got[0].webhook_id == got[1].webhook_id
    # The killed relay's claim ran out (2 s timeout + 5 s margin) before anyone sent it again.
    assert got[1].at - started_again > 3
    assert await _delivered(pool, shop_id) == 3


async def test_a_database_restart_mid_delivery_loses_nothing(pool, dsn, own_postgres, receiver):
    """PostgreSQL goes away while a delivery is with the receiver, so its outcome can't be
    written; after the restart the relay sends it again and everything after it, in order."""
    shop_id = f"shop-{uuid.uuid4().hex[:8]}"
    await _subscribe(pool, receiver, shop_id, "restart")
    receiver.behavior["restart"] = _hang_first_time(1.0)
    ids = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for cid in ids:
        await _transition(pool, shop_id, cid, 1)

    config = fast_config(lease_margin=timedelta(seconds=1), poll_interval=0.1)
    async with running_relay(dsn, config):
        deadline = time.monotonic() + 10
        while not receiver.of("restart", accepted=False):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await own_postgres.stop_async()
        await asyncio.sleep(1.5)
        await own_postgres.start_async()
        for cid in ids:  # the runs go on once the database is back
            for n in (2, 3):
                for _ in range(50):
                    try:
                        await _transition(pool, shop_id, cid, n)
                        break
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        await asyncio.sleep(0.1)
        got = await receiver.wait_for(
            "restart", lambda r: len({x.webhook_id for x in r}) == 9, within=30
        )
        # The receiver answers before the relay records it: wait for the records too.
        deadline = time.monotonic() + 15
        while await _delivered(pool, shop_id) < 9:
            assert time.monotonic() < deadline, await _delivered(pool, shop_id)
            await asyncio.sleep(0.1)

    by_cancellation = events_of(got)
    for cid in ids:
        sequences = [seq for seq, _ in by_cancellation[cid]]
        assert sorted(set(sequences)) == [1, 2, 3], by_cancellation[cid]
        assert sequences == sorted(sequences), "never out of order"


async def _delivered(pool: asyncpg.Pool, shop_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE shop_id=$1 AND status='delivered'",
        shop_id,
    )
    return count


async def test_delivered_rows_are_pruned_after_the_retention(pool, dsn, receiver):
    shop_id, cid = f"shop-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await _subscribe(pool, receiver, shop_id, "prune")
    await _transition(pool, shop_id, cid, 1)
    async with running_relay(dsn):
        await receiver.wait_for("prune", lambda r: len(r) == 1)
    store = EventStore(pool)
    assert await store.prune(timedelta(hours=1), timedelta(days=1)) == 0
    await asyncio.sleep(0.2)
    assert await store.prune(timedelta(milliseconds=100), timedelta(days=1)) >= 1
    assert (
        await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE shop_id=$1", shop_id)
        == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE shop_id=$1", shop_id) == 0
    # The sequence is kept: the run's next event is number 2, not 1 again.
    await _transition(pool, shop_id, cid, 2)
    assert await pool.fetchval("SELECT sequence FROM webhook_events WHERE shop_id=$1", shop_id) == 2
