"""Durable state of the sandbox in one SQLite file.

Everything a restart must keep lives here: payments, their ledgers, refunds (pending ones
included, with the moment they settle or fail), idempotency records, the fault
configuration, the webhook outbox and the anchor of the provider clock. Callers group
writes with `Store.transaction()`, so an effect and the idempotency record describing it
are committed together or not at all.

All calls are synchronous and meant to run on the event loop thread: each is a tiny local
transaction, and keeping them inline means no two requests can interleave between the
"is this key new?" read and the write that follows it.
"""

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from provider_sandbox.clock import ClockAnchor, from_iso, to_iso
from provider_sandbox.ledger import EntryType, LedgerEntry, RefundStatus
from provider_sandbox.models import Behavior, FaultsConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id          TEXT PRIMARY KEY,
    amount      INTEGER NOT NULL,
    currency    TEXT NOT NULL,
    behavior    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    at               TEXT NOT NULL,
    type             TEXT NOT NULL,
    amount           INTEGER NOT NULL,
    idempotency_key  TEXT
);
CREATE INDEX IF NOT EXISTS ledger_by_payment ON ledger (payment_id, seq);
CREATE TABLE IF NOT EXISTS refunds (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    amount           INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    settle_at        TEXT,
    settled_at       TEXT,
    failure_code     TEXT,
    idempotency_key  TEXT
);
CREATE INDEX IF NOT EXISTS refunds_by_status ON refunds (status, settle_at);
CREATE INDEX IF NOT EXISTS refunds_by_payment ON refunds (payment_id, status);
CREATE TABLE IF NOT EXISTS idempotency (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS faults (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    config  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_events (
    id               TEXT PRIMARY KEY,  -- the delivery: the event id, or a duplicate's id
    payload          BLOB NOT NULL,
    created_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    delivered_at     TEXT,
    abandoned_at     TEXT
);
CREATE INDEX IF NOT EXISTS webhook_events_due
    ON webhook_events (next_attempt_at) WHERE delivered_at IS NULL AND abandoned_at IS NULL;
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at);
CREATE TABLE IF NOT EXISTS clock (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    wall      TEXT NOT NULL,
    provider  TEXT NOT NULL,
    speed     REAL NOT NULL
);
"""

_ADDED_COLUMNS = {
    "payments": {"account": "TEXT NOT NULL DEFAULT 'default'"},
    "refunds": {"fail_at": "TEXT", "metadata": "TEXT"},
}
"""Columns newer than the first schema: added to an older database when it is opened, so a
sandbox keeps its state across an upgrade. A payment from before accounts belongs to the
default account; a refund from before metadata has none."""


@dataclass(frozen=True)
class PaymentRecord:
    """A payment as created; its movements live in the ledger."""

    id: str
    amount: int
    currency: str
    behavior: Behavior
    created_at: datetime
    account: str = "default"
    """The merchant account the payment belongs to; other accounts can't see it."""


@dataclass(frozen=True)
class RefundRecord:
    """A refund request and what became of it."""

    id: str
    payment_id: str
    amount: int
    currency: str
    status: RefundStatus
    created_at: datetime
    settle_at: datetime | None
    """When a pending refund turns succeeded; None once decided."""
    settled_at: datetime | None
    failure_code: str | None
    idempotency_key: str | None
    fail_at: datetime | None = None
    """When a succeeded refund turns failed (`fail_after_success`); None otherwise."""
    metadata: dict[str, str] | None = None
    """The caller's own keys and values, returned as given."""


@dataclass(frozen=True)
class StoredResponse:
    """The first answer given to an idempotency key, replayed for its retries."""

    request_hash: str
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class WebhookEvent:
    """One delivery in the outbox, with the exact event bytes that are signed and sent.

    `id` names the delivery: the event's own id for its first delivery, with a suffix for
    a duplicate; the event id the receiver sees is inside the payload.
    """

    id: str
    payload: bytes
    attempts: int


class Store:
    """The sandbox's SQLite database.

    Args:
        path: The database file; created with its schema when missing.
    """

    def __init__(self, path: Path) -> None:
        # isolation_level=None turns off the sqlite3 module's implicit transactions, so
        # `transaction()` alone decides where they begin and end. check_same_thread is off
        # because the app may be built on one thread and served on another (as Starlette's
        # TestClient does); use is still serialized, on the serving event loop.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a process crash; only a power loss may drop the last
        # commits, which is fine for a sandbox.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        # Another process on the same file (a stale sandbox) waits instead of failing.
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)
        for table, added in _ADDED_COLUMNS.items():
            columns = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in added.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS refunds_failing ON refunds (fail_at)"
            " WHERE fail_at IS NOT NULL"
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the enclosed reads and writes as one atomic transaction.

        IMMEDIATE takes the write lock up front, so a read-check-write sequence can't be
        overtaken by another writer between the check and the write.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Payments and their ledger

    def insert_payment(self, payment: PaymentRecord) -> None:
        """Store a new payment."""
        self._db.execute(
            "INSERT INTO payments (id, amount, currency, behavior, created_at, account)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                payment.id,
                payment.amount,
                payment.currency,
                payment.behavior.model_dump_json(),
                to_iso(payment.created_at),
                payment.account,
            ),
        )

    def get_payment(self, payment_id: str) -> PaymentRecord | None:
        """Load a payment, or None when the id is unknown."""
        row = self._db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if row is None:
            return None
        return PaymentRecord(
            id=row["id"],
            amount=row["amount"],
            currency=row["currency"],
            behavior=Behavior.model_validate_json(row["behavior"]),
            created_at=from_iso(row["created_at"]),
            account=row["account"],
        )

    def append_ledger(self, payment_id: str, entry: LedgerEntry) -> None:
        """Add a movement at the end of a payment's ledger."""
        self._db.execute(
            "INSERT INTO ledger (payment_id, at, type, amount, idempotency_key)"
            " VALUES (?, ?, ?, ?, ?)",
            (payment_id, to_iso(entry.at), entry.type.value, entry.amount, entry.idempotency_key),
        )

    def ledger(self, payment_id: str) -> list[LedgerEntry]:
        """A payment's movements, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM ledger WHERE payment_id = ? ORDER BY seq", (payment_id,)
        ).fetchall()
        return [
            LedgerEntry(
                at=from_iso(row["at"]),
                type=EntryType(row["type"]),
                amount=row["amount"],
                idempotency_key=row["idempotency_key"],
            )
            for row in rows
        ]

    # Refunds

    def insert_refund(self, refund: RefundRecord) -> None:
        """Store a new refund."""
        self._db.execute(
            "INSERT INTO refunds (id, payment_id, amount, currency, status, created_at,"
            " settle_at, settled_at, failure_code, idempotency_key, fail_at, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                refund.id,
                refund.payment_id,
                refund.amount,
                refund.currency,
                refund.status.value,
                to_iso(refund.created_at),
                _iso_or_none(refund.settle_at),
                _iso_or_none(refund.settled_at),
                refund.failure_code,
                refund.idempotency_key,
                _iso_or_none(refund.fail_at),
                None if refund.metadata is None else json.dumps(refund.metadata),
            ),
        )

    def get_refund(self, refund_id: str) -> RefundRecord | None:
        """Load a refund, or None when the id is unknown."""
        row = self._db.execute("SELECT * FROM refunds WHERE id = ?", (refund_id,)).fetchone()
        return None if row is None else _refund(row)

    def refunds_of(self, payment_id: str) -> list[RefundRecord]:
        """A payment's refunds, newest first."""
        rows = self._db.execute(
            "SELECT * FROM refunds WHERE payment_id = ? ORDER BY created_at DESC, rowid DESC",
            (payment_id,),
        ).fetchall()
        return [_refund(row) for row in rows]

    def pending_refund_total(self, payment_id: str) -> int:
        """The sum of a payment's refunds that have not settled yet."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE payment_id = ? AND status = ?",
            (payment_id, RefundStatus.PENDING.value),
        ).fetchone()
        return int(row[0])

    def due_refunds(self, now: datetime) -> list[RefundRecord]:
        """Pending refunds whose settle time has come, earliest first."""
        rows = self._db.execute(
            "SELECT * FROM refunds WHERE status = ? AND settle_at <= ? ORDER BY settle_at, id",
            (RefundStatus.PENDING.value, to_iso(now)),
        ).fetchall()
        return [_refund(row) for row in rows]

    def mark_refund_settled(self, refund_id: str, settled_at: datetime) -> None:
        """Record that a pending refund has succeeded."""
        self._db.execute(
            "UPDATE refunds SET status = ?, settle_at = NULL, settled_at = ? WHERE id = ?",
            (RefundStatus.SUCCEEDED.value, to_iso(settled_at), refund_id),
        )

    def failing_refunds(self, now: datetime) -> list[RefundRecord]:
        """Succeeded refunds whose failure time has come, earliest first."""
        rows = self._db.execute(
            "SELECT * FROM refunds WHERE fail_at IS NOT NULL AND fail_at <= ? AND status = ?"
            " ORDER BY fail_at, id",
            (to_iso(now), RefundStatus.SUCCEEDED.value),
        ).fetchall()
        return [_refund(row) for row in rows]

    def mark_refund_failed(self, refund_id: str, failure_code: str) -> None:
        """Record that a refund failed (a pending one, or a succeeded one after the fact)."""
        self._db.execute(
            "UPDATE refunds SET status = ?, settle_at = NULL, fail_at = NULL, failure_code = ?"
            " WHERE id = ?",
            (RefundStatus.FAILED.value, failure_code, refund_id),
        )

    # Idempotency records

    def find_response(self, scope: str, key: str, since: datetime) -> StoredResponse | None:
        """The answer first given to this key in this scope, unless it is older than `since`.

        A record older than that is forgotten, as a real provider forgets keys: the key is
        new again (and `save_response` replaces the old record).
        """
        row = self._db.execute(
            "SELECT request_hash, status_code, body FROM idempotency"
            " WHERE scope = ? AND key = ? AND created_at >= ?",
            (scope, key, to_iso(since)),
        ).fetchone()
        if row is None:
            return None
        return StoredResponse(row["request_hash"], row["status_code"], json.loads(row["body"]))

    def save_response(
        self, scope: str, key: str, response: StoredResponse, created_at: datetime
    ) -> None:
        """Remember the answer given to a key so retries get it again."""
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency"
            " (scope, key, request_hash, status_code, body, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                scope,
                key,
                response.request_hash,
                response.status_code,
                json.dumps(response.body),
                to_iso(created_at),
            ),
        )

    def forget_responses(self, before: datetime) -> int:
        """Delete idempotency records created before `before`; returns how many."""
        cursor = self._db.execute("DELETE FROM idempotency WHERE created_at < ?", (to_iso(before),))
        return cursor.rowcount

    # Fault injection

    def load_faults(self) -> FaultsConfig:
        """The current fault configuration; no faults until one is saved."""
        row = self._db.execute("SELECT config FROM faults WHERE id = 1").fetchone()
        return FaultsConfig() if row is None else FaultsConfig.model_validate_json(row["config"])

    def save_faults(self, faults: FaultsConfig) -> None:
        """Replace the fault configuration."""
        self._db.execute(
            "INSERT INTO faults (id, config) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET config = excluded.config",
            (faults.model_dump_json(),),
        )

    # Webhook outbox

    def insert_delivery(
        self, delivery_id: str, payload: bytes, created_at: datetime, first_attempt_at: datetime
    ) -> None:
        """Queue one delivery of a webhook event (an event delivered twice has two rows).

        Both times are wall-clock time (see `provider_sandbox.clock`).
        """
        self._db.execute(
            "INSERT INTO webhook_events (id, payload, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?)",
            (delivery_id, payload, to_iso(created_at), to_iso(first_attempt_at)),
        )

    def due_events(self, now: datetime) -> list[WebhookEvent]:
        """Undelivered events whose next attempt is due, oldest first."""
        rows = self._db.execute(
            "SELECT id, payload, attempts FROM webhook_events"
            " WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, created_at",
            (to_iso(now),),
        ).fetchall()
        return [WebhookEvent(row["id"], bytes(row["payload"]), row["attempts"]) for row in rows]

    def mark_event_delivered(self, event_id: str, at: datetime) -> None:
        """Record a successful delivery."""
        self._db.execute(
            "UPDATE webhook_events SET attempts = attempts + 1, delivered_at = ? WHERE id = ?",
            (to_iso(at), event_id),
        )

    def mark_event_failed(self, event_id: str, *, retry_at: datetime | None, at: datetime) -> None:
        """Record a failed delivery: retry at `retry_at`, or give up when it is None."""
        if retry_at is None:
            self._db.execute(
                "UPDATE webhook_events SET attempts = attempts + 1, abandoned_at = ? WHERE id = ?",
                (to_iso(at), event_id),
            )
        else:
            self._db.execute(
                "UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = ?"
                " WHERE id = ?",
                (to_iso(retry_at), event_id),
            )

    # The provider clock

    def load_clock(self) -> ClockAnchor | None:
        """Where the provider clock stood, or None while it has only ever been real time."""
        row = self._db.execute("SELECT wall, provider, speed FROM clock WHERE id = 1").fetchone()
        if row is None:
            return None
        return ClockAnchor(from_iso(row["wall"]), from_iso(row["provider"]), row["speed"])

    def save_clock(self, anchor: ClockAnchor) -> None:
        """Persist the provider clock's anchor."""
        self._db.execute(
            "INSERT INTO clock (id, wall, provider, speed) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET wall = excluded.wall,"
            " provider = excluded.provider, speed = excluded.speed",
            (to_iso(anchor.wall), to_iso(anchor.provider), anchor.speed),
        )


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else to_iso(moment)


def _refund(row: sqlite3.Row) -> RefundRecord:
    return RefundRecord(
        id=row["id"],
        payment_id=row["payment_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=RefundStatus(row["status"]),
        created_at=from_iso(row["created_at"]),
        settle_at=None if row["settle_at"] is None else from_iso(row["settle_at"]),
        settled_at=None if row["settled_at"] is None else from_iso(row["settled_at"]),
        failure_code=row["failure_code"],
        idempotency_key=row["idempotency_key"],
        fail_at=None if row["fail_at"] is None else from_iso(row["fail_at"]),
        metadata=None if row["metadata"] is None else json.loads(row["metadata"]),
    )
