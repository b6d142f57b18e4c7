"""Events out in the store database: events written with their transition, endpoints,
deliveries, and the relay's claims.

:func:`record_events` runs inside a transition's own transaction (the change set's, or the
opening's), so an event exists exactly when its transition committed: the outbox pattern.
It fans the event out to the shop's matching endpoints in the same statement, and wakes
the relays with ``NOTIFY`` (sent by PostgreSQL at commit, never for a rolled-back one).

:class:`EventStore` holds everything else: the hook's endpoint and delivery routes, and
the relay's claim, outcome, closing and pruning queries. Tables: ``migrations/005_events.sql``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg

from domain.cancellation import CancellationStatus, CancellationView
from domain.changes import ChangeSet, Recipient
from domain.errors import CancellationError, ErrorCode
from domain.events import (
    CLOSING_STATUSES,
    SECRET_BYTES,
    EventType,
    event_data,
    event_type_for,
    new_secret,
)

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

NOTIFY_CHANNEL: Final = "webhook_deliveries"
"""Relays ``LISTEN`` here; a transition that queued deliveries notifies at commit."""
CLOSED_SOURCE: Final = "closed"


@dataclass(frozen=True)
class NewEvent:
    """An event to record: its type, what it announces (``source``) and when it happened."""

    type: EventType
    source: str
    occurred_at: datetime
    notify_customer: bool = False
    customer_note: str | None = None


# ---------------------------------------------------------------------------- writing events


async def record_events(
    conn: Conn,
    shop_id: str,
    view: CancellationView,
    events: Sequence[NewEvent],
    *,
    closes_at: datetime | None = None,
    closed: bool = False,
) -> None:
    """Record a transition's events with the next sequence numbers, queue a delivery for
    every endpoint of the shop whose filter takes them, and notify the relays. Events no
    endpoint takes are counted in the sequence but not stored.

    Call it inside the transition's transaction. ``closes_at``: when a canceled run closes
    by itself (its undo window); ``closed``: the run has closed now.
    """
    if not events and closes_at is None and not closed:
        return
    cancellation = closed_json = view.model_dump_json()
    if any(e.type is EventType.CLOSED for e in events):
        # The run is over once `closed` is announced: its view says so, as the hook's does.
        closed_view = view.model_copy(update={"closed": True, "allowed_actions": []})
        closed_json = closed_view.model_dump_json()
    queued = await conn.fetchval(
        """WITH stream AS (
             INSERT INTO event_streams AS s (shop_id, cancellation_id, last_sequence, closes_at,
               closed)
             VALUES ($1, $2, cardinality($3::text[]), $7::timestamptz, $8::boolean)
             ON CONFLICT (shop_id, cancellation_id) DO UPDATE
               SET last_sequence = s.last_sequence + EXCLUDED.last_sequence,
                   closes_at = EXCLUDED.closes_at, closed = s.closed OR EXCLUDED.closed
             RETURNING last_sequence),
           ev AS (
             INSERT INTO webhook_events (event_id, shop_id, cancellation_id, sequence, type,
               source, occurred_at, data)
             SELECT 'evt_' || replace(gen_random_uuid()::text, '-', ''), $1, $2,
               stream.last_sequence - cardinality($3::text[]) + x.n::integer, x.t, x.src, x.at,
               x.d::jsonb
             FROM stream,
               unnest($3::text[], $4::text[], $5::timestamptz[], $6::text[])
                 WITH ORDINALITY AS x(t, src, at, d, n)
             WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                           WHERE e.shop_id = $1 AND webhook_filter_matches(e.events, x.t))
             ON CONFLICT DO NOTHING
             RETURNING event_id, type, sequence),
           queued AS (
             INSERT INTO webhook_deliveries (delivery_id, shop_id, endpoint_id, event_id,
               cancellation_id, sequence)
             SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), e.shop_id,
               e.endpoint_id, ev.event_id, $2, ev.sequence
             FROM ev JOIN webhook_endpoints e ON e.shop_id = $1
             WHERE webhook_filter_matches(e.events, ev.type)
             RETURNING 1)
           SELECT count(*) FROM queued""",
        shop_id,
        view.cancellation_id,
        [e.type.value for e in events],
        [e.source for e in events],
        [e.occurred_at for e in events],
        [
            event_data(
                closed_json if e.type is EventType.CLOSED else cancellation,
                notify_customer=e.notify_customer,
                customer_note=e.customer_note,
            )
            for e in events
        ],
        closes_at,
        closed,
    )
    if queued:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


def transition_events(
    changes: ChangeSet, view: CancellationView, recorded: Sequence[tuple[str, str, datetime]]
) -> list[NewEvent]:
    """The events a change set announces.

    ``recorded``: the audit entries this transaction recorded, in history order, as
    (key, audit event, when): the change set's own, and before it any the workflow took
    without a store write of its own (a provider refund settling). A transition that ends
    the run is followed by ``closed``.
    """
    events: list[NewEvent] = []
    to_customer = [n for n in changes.notifications if n.recipient is Recipient.CUSTOMER]
    for key, audit_event, at in recorded:
        event_type = event_type_for(audit_event)
        if event_type is None:
            continue
        own = key == changes.event_key
        notify = own and bool(to_customer)
        note = None
        if notify:
            note = to_customer[0].payload.get("customer_note", view.customer_note)
        events.append(NewEvent(event_type, key, at, notify_customer=notify, customer_note=note))
    if view.status in CLOSING_STATUSES:
        events.append(NewEvent(EventType.CLOSED, CLOSED_SOURCE, changes.event.at))
    return events


def closing_time(view: CancellationView) -> datetime | None:
    """When a run in this state closes by itself: a canceled one at its undo window's end."""
    if view.status is CancellationStatus.CANCELED and view.undo_until is not None:
        return view.undo_until
    return None


# ---------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    """A shop's webhook endpoint, without its secrets."""

    shop_id: str
    endpoint_id: str
    url: str
    events: list[str]
    created_at: datetime
    updated_at: datetime
    secret_created_at: datetime
    previous_secret_expires_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    """One event's delivery to one endpoint."""

    delivery_id: str
    event_id: str
    type: str
    cancellation_id: str
    sequence: int
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Claimed:
    """A delivery a relay claimed, with what it needs to send it."""

    delivery_id: str
    attempts: int
    """Attempts including this one."""
    url: str
    signing_secrets: list[str]
    event_id: str
    type: str
    sequence: int
    occurred_at: datetime
    data: str
    """The event's ``data`` as JSON, without the sequence."""


_WAKE_SUCCESSOR = """WITH done AS ({update}
      RETURNING shop_id, endpoint_id, cancellation_id, sequence)
    SELECT pg_notify($3, '') FROM done
    WHERE EXISTS (SELECT 1 FROM webhook_deliveries n
                  WHERE n.shop_id = done.shop_id AND n.endpoint_id = done.endpoint_id
                    AND n.cancellation_id = done.cancellation_id AND n.status = 'pending'
                    AND n.sequence > done.sequence)"""
"""Finish a delivery and, when the cancellation's next event waits for it, wake the relays
(another relay may be the one to send it)."""

_ENDPOINT_COLUMNS = """shop_id, endpoint_id, url, events, created_at, updated_at,
    secret_created_at,
    CASE WHEN previous_expires_at > now() THEN previous_expires_at END AS previous_expires_at"""

_DELIVERY_COLUMNS = """d.delivery_id, d.event_id, ev.type, d.cancellation_id, d.sequence,
    d.status, d.attempts, CASE WHEN d.status = 'pending' THEN d.next_attempt_at END
      AS next_attempt_at,
    d.last_attempt_at, d.last_error, d.delivered_at, d.created_at"""


class EventStore:
    """Queries of the events tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ endpoints (the hook)

    async def put_endpoint(
        self, shop_id: str, endpoint_id: str, url: str, events: list[str]
    ) -> tuple[Endpoint, str | None]:
        """Create or update an endpoint; the new secret when it was created, else ``None``."""
        secret = new_secret(secrets.token_bytes(SECRET_BYTES))
        row = await self._pool.fetchrow(
            f"""INSERT INTO webhook_endpoints AS w (shop_id, endpoint_id, url, events, secret,
                  secret_created_at)
                VALUES ($1, $2, $3, $4, $5, now())
                ON CONFLICT (shop_id, endpoint_id) DO UPDATE
                  SET url = EXCLUDED.url, events = EXCLUDED.events, updated_at = now()
                RETURNING {_ENDPOINT_COLUMNS}, (xmax = 0) AS created""",
            shop_id,
            endpoint_id,
            url,
            events,
            secret,
        )
        assert row is not None
        return _endpoint(row), secret if row["created"] else None

    async def get_endpoint(self, shop_id: str, endpoint_id: str) -> Endpoint:
        """One endpoint of the shop, or ``webhook_not_found``."""
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
            " WHERE shop_id=$1 AND endpoint_id=$2",
            shop_id,
            endpoint_id,
        )
        if row is None:
            raise _no_endpoint(shop_id, endpoint_id)
        return _endpoint(row)

    async def list_endpoints(self, shop_id: str) -> list[Endpoint]:
        """The shop's endpoints, by id."""
        rows = await self._pool.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE shop_id=$1"
            " ORDER BY endpoint_id",
            shop_id,
        )
        return [_endpoint(r) for r in rows]

    async def delete_endpoint(self, shop_id: str, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries (pending ones are never sent)."""
        deleted = await self._pool.fetchval(
            "DELETE FROM webhook_endpoints WHERE shop_id=$1 AND endpoint_id=$2 RETURNING 1",
            shop_id,
            endpoint_id,
        )
        if deleted is None:
            raise _no_endpoint(shop_id, endpoint_id)

    async def rotate_secret(
        self, shop_id: str, endpoint_id: str, previous_valid_for: timedelta
    ) -> tuple[Endpoint, str]:
        """A new secret; the current one keeps signing for ``previous_valid_for``.

        At most two secrets are valid at once: a rotation during a rotation ends the
        older one's validity now.
        """
        secret = new_secret(secrets.token_bytes(SECRET_BYTES))
        row = await self._pool.fetchrow(
            f"""UPDATE webhook_endpoints SET previous_secret = secret,
                  previous_expires_at = now() + $3::interval, secret = $4,
                  secret_created_at = now(), updated_at = now()
                WHERE shop_id=$1 AND endpoint_id=$2 RETURNING {_ENDPOINT_COLUMNS}""",
            shop_id,
            endpoint_id,
            previous_valid_for,
            secret,
        )
        if row is None:
            raise _no_endpoint(shop_id, endpoint_id)
        return _endpoint(row), secret

    # ------------------------------------------------------------------ deliveries (the hook)

    async def list_deliveries(
        self,
        shop_id: str,
        endpoint_id: str,
        *,
        status: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first, after the keyset cursor ``before``."""
        await self.get_endpoint(shop_id, endpoint_id)
        rows = await self._pool.fetch(
            f"""SELECT {_DELIVERY_COLUMNS}
                FROM webhook_deliveries d JOIN webhook_events ev USING (event_id)
                WHERE d.shop_id=$1 AND d.endpoint_id=$2
                  AND ($3::text IS NULL OR d.status = $3)
                  AND ($4::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($4, $5))
                ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $6""",
            shop_id,
            endpoint_id,
            status,
            before[0] if before else None,
            before[1] if before else "",
            limit,
        )
        return [_delivery(r) for r in rows]

    async def redeliver(self, shop_id: str, endpoint_id: str, delivery_id: str) -> Delivery:
        """Send a failed (or delivered) delivery again, from a fresh retry schedule.

        Raises:
            CancellationError: ``delivery_not_found``; ``invalid_transition`` while it is
                still pending (the relay is on it).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                "SELECT status FROM webhook_deliveries"
                " WHERE shop_id=$1 AND endpoint_id=$2 AND delivery_id=$3 FOR UPDATE",
                shop_id,
                endpoint_id,
                delivery_id,
            )
            if status is None:
                raise CancellationError(
                    ErrorCode.DELIVERY_NOT_FOUND,
                    f"endpoint {endpoint_id} has no delivery {delivery_id}",
                )
            if status == "pending":
                raise CancellationError(
                    ErrorCode.INVALID_TRANSITION,
                    f"delivery {delivery_id} is still pending; the relay sends it",
                )
            await conn.execute(
                "UPDATE webhook_deliveries SET status='pending', attempts=0,"
                " next_attempt_at=now(), last_error=NULL, delivered_at=NULL"
                " WHERE delivery_id=$1",
                delivery_id,
            )
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
            row = await conn.fetchrow(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d"
                " JOIN webhook_events ev USING (event_id) WHERE d.delivery_id=$1",
                delivery_id,
            )
            assert row is not None
            return _delivery(row)

    # ------------------------------------------------------------------ the relay

    async def claim(self, limit: int, lease: timedelta) -> list[Claimed]:
        """Claim up to ``limit`` due deliveries for ``lease``, oldest due first.

        A delivery is due when no earlier event of its cancellation waits for the same
        endpoint (order per cancellation). Claiming moves ``next_attempt_at`` past the lease
        and counts the attempt; a relay that dies leaves it due again when the lease ends.
        ``SKIP LOCKED`` lets any number of relays claim side by side.
        """
        rows = await self._pool.fetch(
            """WITH ready AS (
                 SELECT d.delivery_id FROM webhook_deliveries d
                 WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                   AND NOT EXISTS (
                     SELECT 1 FROM webhook_deliveries p
                     WHERE p.shop_id = d.shop_id AND p.endpoint_id = d.endpoint_id
                       AND p.cancellation_id = d.cancellation_id AND p.status = 'pending'
                       AND p.sequence < d.sequence)
                 ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED),
               claimed AS (
                 UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
                   next_attempt_at = now() + $2::interval, last_attempt_at = now()
                 FROM ready WHERE d.delivery_id = ready.delivery_id
                 RETURNING d.delivery_id, d.attempts, d.shop_id, d.endpoint_id, d.event_id)
               SELECT c.delivery_id, c.attempts, e.url, e.secret,
                 CASE WHEN e.previous_expires_at > now() THEN e.previous_secret END
                   AS previous_secret,
                 ev.event_id, ev.type, ev.sequence, ev.occurred_at, ev.data
               FROM claimed c
               JOIN webhook_endpoints e USING (shop_id, endpoint_id)
               JOIN webhook_events ev ON ev.event_id = c.event_id""",
            limit,
            lease,
        )
        return [
            Claimed(
                delivery_id=r["delivery_id"],
                attempts=r["attempts"],
                url=r["url"],
                signing_secrets=[s for s in (r["secret"], r["previous_secret"]) if s],
                event_id=r["event_id"],
                type=r["type"],
                sequence=r["sequence"],
                occurred_at=r["occurred_at"],
                data=r["data"],
            )
            for r in rows
        ]

    async def delivered(self, delivery_id: str, attempts: int) -> None:
        """The receiver took it (2xx). Guarded by ``attempts``: a relay whose lease ran out
        and whose delivery another relay claimed meanwhile changes nothing."""
        await self._pool.execute(
            _WAKE_SUCCESSOR.format(
                update="UPDATE webhook_deliveries SET status='delivered', delivered_at=now(),"
                " last_error=NULL WHERE delivery_id=$1 AND attempts=$2 AND status='pending'"
            ),
            delivery_id,
            attempts,
            NOTIFY_CHANNEL,
        )

    async def attempt_failed(
        self, delivery_id: str, attempts: int, error: str, retry_in: timedelta | None
    ) -> None:
        """An attempt failed: due again after ``retry_in``, or ``failed`` when ``None``."""
        if retry_in is not None:
            await self._pool.execute(
                "UPDATE webhook_deliveries SET last_error=$3, next_attempt_at=now() + $4"
                " WHERE delivery_id=$1 AND attempts=$2 AND status='pending'",
                delivery_id,
                attempts,
                error[:500],
                retry_in,
            )
            return
        await self._pool.execute(
            _WAKE_SUCCESSOR.format(
                update="UPDATE webhook_deliveries SET last_error=$4, status='failed'"
                " WHERE delivery_id=$1 AND attempts=$2 AND status='pending'"
            ),
            delivery_id,
            attempts,
            NOTIFY_CHANNEL,
            error[:500],
        )

    async def close_expired(self, grace: timedelta, limit: int = 100) -> int:
        """Announce ``closed`` for canceled runs whose undo window ended ``grace`` ago.

        The workflow closes such a run with a timer and no store write, so nothing else
        would say so. Locked per stream, so concurrent relays announce each once.
        """
        closed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT s.shop_id, s.cancellation_id, c.view FROM event_streams s
                   JOIN cancellations c USING (cancellation_id)
                   WHERE s.closes_at <= now() - $1::interval AND NOT s.closed
                   ORDER BY s.closes_at LIMIT $2 FOR UPDATE OF s SKIP LOCKED""",
                grace,
                limit,
            )
            for row in rows:
                view = CancellationView.model_validate_json(row["view"])
                if view.status is not CancellationStatus.CANCELED:
                    # The store moved on (an undo) after closes_at was set: not closed.
                    await conn.execute(
                        "UPDATE event_streams SET closes_at=NULL"
                        " WHERE shop_id=$1 AND cancellation_id=$2",
                        row["shop_id"],
                        row["cancellation_id"],
                    )
                    continue
                closed_at = view.undo_until or datetime.now(UTC)
                await record_events(
                    conn,
                    row["shop_id"],
                    view,
                    [NewEvent(EventType.CLOSED, CLOSED_SOURCE, closed_at)],
                    closed=True,
                )
                closed += 1
        return closed

    async def prune(self, delivered_for: timedelta, failed_for: timedelta) -> int:
        """Delete delivered deliveries older than ``delivered_for``, failed ones older than
        ``failed_for``, then events no delivery needs any more; returns the deliveries."""
        async with self._pool.acquire() as conn, conn.transaction():
            pruned: int = await conn.fetchval(
                """WITH gone AS (
                     DELETE FROM webhook_deliveries
                     WHERE (status = 'delivered' AND delivered_at < now() - $1::interval)
                        OR (status = 'failed' AND last_attempt_at < now() - $2::interval)
                     RETURNING 1)
                   SELECT count(*) FROM gone""",
                delivered_for,
                failed_for,
            )
            await conn.execute(
                """DELETE FROM webhook_events ev WHERE ev.created_at < now() - $1::interval
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                   WHERE d.event_id = ev.event_id)""",
                delivered_for,
            )
            return pruned


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(
        shop_id=row["shop_id"],
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        events=list(row["events"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret_created_at=row["secret_created_at"],
        previous_secret_expires_at=row["previous_expires_at"],
    )


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(**dict(row))


def _no_endpoint(shop_id: str, endpoint_id: str) -> CancellationError:
    return CancellationError(
        ErrorCode.WEBHOOK_NOT_FOUND, f"shop {shop_id} has no webhook endpoint {endpoint_id}"
    )
