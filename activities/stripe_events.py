"""Which Stripe webhook events the hook has already acted on (migration ``008``)."""

from __future__ import annotations

import asyncpg


class StripeEventLog:
    """Stripe event ids, so a redelivered event is acted on once."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def seen(self, event_id: str) -> bool:
        """Whether the hook already acted on this event."""
        row = await self._pool.fetchval("SELECT 1 FROM stripe_events WHERE event_id = $1", event_id)
        return row is not None

    async def record(self, event_id: str, event_type: str, account: str | None) -> bool:
        """Remember that the hook acted on the event; ``False`` if it was already known."""
        inserted = await self._pool.fetchval(
            """INSERT INTO stripe_events (event_id, type, account) VALUES ($1, $2, $3)
               ON CONFLICT (event_id) DO NOTHING RETURNING true""",
            event_id,
            event_type,
            account,
        )
        return inserted is not None
