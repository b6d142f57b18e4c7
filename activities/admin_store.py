"""The admin hook's own queries: hashed bearer tokens, idempotent answers, webhook lookups.

The hook reads and writes orders and cancellations only through the client
(:class:`~starter.client.CancellationClient`); what lives here is what only the HTTP edge
needs. The tables come from ``migrations/002_admin_hook.sql`` and, for the provider events
acted on, ``migrations/006_provider_events.sql``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import asyncpg

from domain.cancellation import CancellationStatus

SETTLING_STATUSES = (CancellationStatus.IN_PROGRESS, CancellationStatus.UNDOING)
"""Cancellations that may be waiting for a provider refund to settle (an undo waits for
refunds in flight, too)."""


def token_hash(token: str) -> str:
    """The SHA-256 of a bearer token, as ``admin_tokens`` stores it (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ClaimOutcome(StrEnum):
    """What claiming an idempotency key found."""

    CLAIMED = "claimed"
    """The key is new (or its first request died): this request acts and records its answer."""
    REPLAY = "replay"
    """The first request with this key finished: answer what it answered."""
    REUSED = "reused"
    """The key came with another request before (method, path or body differ)."""
    IN_PROGRESS = "in_progress"
    """The first request with this key is still running."""


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`AdminStore.claim_key`, with the stored answer on a replay."""

    outcome: ClaimOutcome
    status: int | None = None
    response: Any = None


@dataclass(frozen=True)
class SettlingCancellation:
    """A cancellation that may wait for a provider refund of one payment."""

    shop_id: str
    cancellation_id: str
    run_id: str | None = None


class AdminStore:
    """Queries of the admin hook's tables, over the store database's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The store database's pool, for the hook's other stores (webhook endpoints)."""
        return self._pool

    async def ping(self) -> None:
        """A trivial query: raises when the database does not answer."""
        await self._pool.fetchval("SELECT 1")

    # ------------------------------------------------------------------ tokens

    async def shop_for_token(self, token: str) -> str | None:
        """The shop a stored token belongs to, or ``None``."""
        digest = token_hash(token)
        row = await self._pool.fetchrow(
            "SELECT token_hash, shop_id FROM admin_tokens WHERE token_hash=$1", digest
        )
        # The lookup is by hash, so its timing tells nothing about the token; the
        # comparison is constant-time anyway, like every other secret comparison here.
        if row is None or not hmac.compare_digest(row["token_hash"], digest):
            return None
        return str(row["shop_id"])

    async def add_token(self, shop_id: str, token: str) -> None:
        """Store a token for a shop (only its hash is kept)."""
        await self._pool.execute(
            "INSERT INTO admin_tokens (token_hash, shop_id) VALUES ($1, $2)"
            " ON CONFLICT (token_hash) DO NOTHING",
            token_hash(token),
            shop_id,
        )

    async def revoke_token(self, token: str) -> bool:
        """Forget a stored token; ``True`` when it existed."""
        deleted = await self._pool.fetchval(
            "DELETE FROM admin_tokens WHERE token_hash=$1 RETURNING 1", token_hash(token)
        )
        return deleted is not None

    # ------------------------------------------------------------------ idempotency keys

    async def claim_key(
        self,
        shop_id: str,
        key: str,
        *,
        method: str,
        path: str,
        body_hash: str,
        lease: timedelta,
    ) -> Claim:
        """Insert-first: the first request with a key claims it with a pending row.

        A pending row older than ``lease`` belongs to a request that died (its process
        stopped between acting and recording); the next request takes it over. Acting
        again is safe: workflow actions use the key as the Temporal update id, and the
        other routes set state rather than add to it.
        """
        for _ in range(3):  # the row may vanish between the insert and the read (a release)
            inserted = await self._pool.fetchval(
                "INSERT INTO idempotency_keys (shop_id, key, method, path, body_hash)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (shop_id, key) DO NOTHING RETURNING 1",
                shop_id,
                key,
                method,
                path,
                body_hash,
            )
            if inserted is not None:
                return Claim(ClaimOutcome.CLAIMED)
            row = await self._pool.fetchrow(
                "SELECT method, path, body_hash, status, response, now() - created_at > $3 AS stale"
                " FROM idempotency_keys WHERE shop_id=$1 AND key=$2",
                shop_id,
                key,
                lease,
            )
            if row is None:
                continue
            same = (
                row["method"] == method
                and row["path"] == path
                and hmac.compare_digest(row["body_hash"], body_hash)
            )
            if not same:
                return Claim(ClaimOutcome.REUSED)
            if row["status"] is not None:
                return Claim(ClaimOutcome.REPLAY, row["status"], json.loads(row["response"]))
            if row["stale"]:
                taken = await self._pool.fetchval(
                    "UPDATE idempotency_keys SET created_at=now()"
                    " WHERE shop_id=$1 AND key=$2 AND status IS NULL"
                    " AND now() - created_at > $3 RETURNING 1",
                    shop_id,
                    key,
                    lease,
                )
                if taken is not None:
                    return Claim(ClaimOutcome.CLAIMED)
            return Claim(ClaimOutcome.IN_PROGRESS)
        return Claim(ClaimOutcome.IN_PROGRESS)

    async def complete_key(self, shop_id: str, key: str, status: int, response: Any) -> None:
        """Record the first answer given for a key; repeats get it from now on."""
        await self._pool.execute(
            "UPDATE idempotency_keys SET status=$3, response=$4, completed_at=now()"
            " WHERE shop_id=$1 AND key=$2",
            shop_id,
            key,
            status,
            json.dumps(response, separators=(",", ":")),
        )

    async def release_key(self, shop_id: str, key: str) -> None:
        """Drop a pending claim whose request failed, so the key can be used again."""
        await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE shop_id=$1 AND key=$2 AND status IS NULL",
            shop_id,
            key,
        )

    async def forget_keys(self, older_than: timedelta) -> int:
        """Delete the keys of requests older than ``older_than``; returns how many."""
        rows = await self._pool.fetch(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval RETURNING 1",
            older_than,
        )
        return len(rows)

    # ------------------------------------------------------------------ provider webhooks

    async def refund_cancellations(
        self,
        payment_id: str,
        provider_reference: str,
        statuses: Iterable[CancellationStatus],
    ) -> list[SettlingCancellation]:
        """The cancellations in ``statuses`` a provider refund may belong to: those with a
        refund line carrying ``provider_reference``, and the latest cancellation of each
        order paid by card ``payment_id`` (its line may not be stored yet)."""
        rows = await self._pool.fetch(
            """SELECT shop_id, cancellation_id, run_id FROM cancellations
               WHERE status = ANY($3::text[]) AND cancellation_id IN (
                   SELECT cancellation_id FROM refund_lines WHERE provider_reference = $2
                   UNION
                   SELECT c.cancellation_id
                   FROM tenders t
                   JOIN LATERAL (
                       SELECT cancellation_id FROM cancellations
                       WHERE shop_id = t.shop_id AND order_id = t.order_id
                       ORDER BY seq DESC LIMIT 1
                   ) c ON true
                   WHERE t.payment_id = $1 AND t.kind = 'card'
               )
               ORDER BY cancellation_id""",
            payment_id,
            provider_reference,
            [s.value for s in statuses],
        )
        return [SettlingCancellation(r["shop_id"], r["cancellation_id"], r["run_id"]) for r in rows]

    async def claim_provider_event(
        self, event_id: str, account: str, lease: timedelta
    ) -> ClaimOutcome:
        """Claim a provider event to act on it.

        ``CLAIMED``: act, then :meth:`finish_provider_event` (or release it on failure).
        ``REPLAY``: it was acted on already. ``IN_PROGRESS``: another request is acting on it
        right now (claimed less than ``lease`` ago). ``account`` is the provider account the
        event comes from (``""`` for the default): event ids are only unique within one.
        """
        claimed = await self._pool.fetchval(
            """INSERT INTO provider_events (event_id, account) VALUES ($1, $2)
               ON CONFLICT (event_id, account) DO UPDATE SET received_at = now()
               WHERE provider_events.handled_at IS NULL
                 AND provider_events.received_at < now() - $3::interval
               RETURNING 1""",
            event_id,
            account,
            lease,
        )
        if claimed is not None:
            return ClaimOutcome.CLAIMED
        handled = await self._pool.fetchval(
            "SELECT handled_at IS NOT NULL FROM provider_events"
            " WHERE event_id = $1 AND account = $2",
            event_id,
            account,
        )
        # Gone meanwhile (released by a failed request): let the provider deliver it again.
        return ClaimOutcome.REPLAY if handled else ClaimOutcome.IN_PROGRESS

    async def finish_provider_event(self, event_id: str, account: str) -> None:
        """Record that a claimed provider event was acted on: repeats are ignored from now."""
        await self._pool.execute(
            "UPDATE provider_events SET handled_at = now() WHERE event_id = $1 AND account = $2",
            event_id,
            account,
        )

    async def release_provider_event(self, event_id: str, account: str) -> None:
        """Drop the claim of an event whose handling failed, so a redelivery acts on it."""
        await self._pool.execute(
            "DELETE FROM provider_events"
            " WHERE event_id = $1 AND account = $2 AND handled_at IS NULL",
            event_id,
            account,
        )

    async def forget_provider_events(self, older_than: timedelta) -> int:
        """Delete provider events received before ``older_than`` ago; returns how many."""
        rows = await self._pool.fetch(
            "DELETE FROM provider_events WHERE received_at < now() - $1::interval RETURNING 1",
            older_than,
        )
        return len(rows)
