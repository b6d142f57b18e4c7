"""Which failures of the store database are outages: the one table the hook and the CLI share.

An outage means the database does not answer or can't serve now, not that a query or a
value is wrong; the caller should come back soon. The hook answers each with
``503 database_unavailable``; the CLI exits 5 with the same code.
"""

from __future__ import annotations

from typing import Final

import asyncpg

DATABASE_OUTAGES: Final = (
    # Refused or dropped connections and timeouts (TimeoutError is an OSError); at the
    # edges, the database is the only thing reached through plain sockets.
    OSError,
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.InterfaceError,  # the client's side of a connection that is gone
    # A pooled connection the server closed at shutdown, caught before asyncpg noticed.
    asyncpg.InternalClientError,
    # Class 53: disk full, out of memory, too many connections, a configured limit hit.
    asyncpg.InsufficientResourcesError,
    # Class 57: shut down by an operator or a crash, starting up, statement timeout,
    # database dropped, idle session ended (CannotConnectNowError, AdminShutdownError, …).
    asyncpg.OperatorInterventionError,
    # Class 58: an I/O error or another failure outside PostgreSQL itself.
    asyncpg.PostgresSystemError,
    # A write reached a read-only server: a standby, mid-failover.
    asyncpg.ReadOnlySQLTransactionError,
)
"""Exceptions that mean the store database does not answer or can't serve now."""
