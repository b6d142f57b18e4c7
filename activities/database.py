"""The store database: connection pool, migrations, and :class:`StoreRepository`.

Activities apply writes through :class:`StoreRepository`; the client side uses the
same repository for reads (quotes, lists, orders), so each query exists once. Its queries
live beside this module: orders and shop settings in :mod:`activities.orders_store`,
cancellation reads in :mod:`activities.cancellation_reads`, cancellation writes in
:mod:`activities.cancellation_writes`.

Rule numbers are those of ``docs/rules.md``.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

from activities.cancellation_reads import CancellationReads, CancellationRow, OrderContext
from activities.cancellation_writes import CancellationWrites, OpenedCancellation

__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "POOL_MAX_SIZE",
    "POOL_MIN_SIZE",
    "CancellationRow",
    "OpenedCancellation",
    "OrderContext",
    "StoreRepository",
    "apply_migrations",
    "create_pool",
]

# A pool per process; cancellations are short transactions, so a few connections suffice.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
# A statement stuck longer than this is a database problem, not a slow query of ours; it
# stays well inside the store activities' 10 s start-to-close timeout.
COMMAND_TIMEOUT_SECONDS = 5.0


async def create_pool(dsn: str) -> asyncpg.Pool:
    """Open the connection pool used by activities and the client."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip the session reset a pooled connection gets on release.

    asyncpg still rolls back a transaction left open; the reset query itself (release
    advisory locks, close cursors, UNLISTEN, RESET ALL) undoes session state this code
    never creates (migrations use a connection of their own), and costs a round trip on
    every release: about one in four of the statements a cancellation sends.
    """


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("activities") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def apply_migrations(dsn: str) -> None:
    """Apply the versioned SQL migrations that are not applied yet, in order.

    An advisory lock makes concurrent starters (worker, dev stack, tests) safe.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock(4711)")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in _migrations():
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await conn.execute("SELECT pg_advisory_unlock(4711)")
    finally:
        await conn.close()


class StoreRepository(CancellationReads, CancellationWrites):
    """Queries of the store database. Writes are idempotent under retries."""
