"""The store's side of bulk cancellations: jobs, each matched order's outcome, and the
keyset pages of orders holding a SKU (tables of ``migrations/007_bulk.sql``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from domain.bulk import (
    BulkCounts,
    BulkError,
    BulkItem,
    BulkJob,
    BulkOutcome,
    BulkParameters,
    BulkStatus,
)
from domain.cancellation import CanceledItem, ReasonCode
from domain.errors import ErrorCode
from domain.refund_plan import RefundMethod

PENDING = "pending"
"""An order's row while its cancellation is being started (never shown or counted)."""


@dataclass(frozen=True)
class KnownOutcome:
    """An order's row as an earlier attempt of the job left it."""

    outcome: str
    """A :class:`BulkOutcome` value, or :data:`PENDING`."""
    cancellation_id: str | None
    items: list[CanceledItem] | None

    @property
    def final(self) -> bool:
        """The order has its outcome: nothing more to do for it."""
        return self.outcome != PENDING


class BulkRepository:
    """Queries of bulk jobs. Every write is keyed, so a retried activity repeats nothing."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ jobs

    async def register(self, parameters: BulkParameters, workflow_id: str, at: datetime) -> None:
        """Record the job (once: a retry finds its row)."""
        p = parameters
        await self._pool.execute(
            """INSERT INTO bulk_cancellations (shop_id, bulk_id, workflow_id, sku, reason_code,
                 reason, refund_method, restock, notify_customer, actor, status, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running', $11)
               ON CONFLICT (shop_id, bulk_id) DO NOTHING""",
            p.shop_id,
            p.bulk_id,
            workflow_id,
            p.sku,
            p.reason_code.value,
            p.reason,
            p.refund_method.value,
            p.restock,
            p.notify_customer,
            p.actor,
            at,
        )

    async def finish(self, shop_id: str, bulk_id: str, status: BulkStatus, at: datetime) -> None:
        """Record how the job ended (once)."""
        await self._pool.execute(
            "UPDATE bulk_cancellations SET status=$3, finished_at=$4"
            " WHERE shop_id=$1 AND bulk_id=$2 AND status='running'",
            shop_id,
            bulk_id,
            status.value,
            at,
        )

    async def request_stop(self, shop_id: str, bulk_id: str) -> bool:
        """Mark the job stopped for new orders; ``False`` when the shop has no such job."""
        found = await self._pool.fetchval(
            "UPDATE bulk_cancellations SET stop_requested_at=coalesce(stop_requested_at, now())"
            " WHERE shop_id=$1 AND bulk_id=$2 RETURNING 1",
            shop_id,
            bulk_id,
        )
        return found is not None

    async def stop_requested(self, shop_id: str, bulk_id: str) -> bool:
        """Whether the merchant asked the job to start no more orders."""
        value = await self._pool.fetchval(
            "SELECT stop_requested_at IS NOT NULL FROM bulk_cancellations"
            " WHERE shop_id=$1 AND bulk_id=$2",
            shop_id,
            bulk_id,
        )
        return bool(value)

    async def get(self, shop_id: str, bulk_id: str) -> BulkJob | None:
        """The job with its counts, or ``None``."""
        row = await self._pool.fetchrow(
            "SELECT * FROM bulk_cancellations WHERE shop_id=$1 AND bulk_id=$2", shop_id, bulk_id
        )
        if row is None:
            return None
        return BulkJob(
            bulk_id=row["bulk_id"],
            shop_id=row["shop_id"],
            workflow_id=row["workflow_id"],
            sku=row["sku"],
            status=BulkStatus(row["status"]),
            counts=await self.counts(shop_id, bulk_id),
            reason_code=ReasonCode(row["reason_code"]),
            refund_method=RefundMethod(row["refund_method"]),
            restock=row["restock"],
            notify_customer=row["notify_customer"],
            stop_requested=row["stop_requested_at"] is not None,
            created_at=row["created_at"],
            finished_at=row["finished_at"],
        )

    async def counts(self, shop_id: str, bulk_id: str) -> BulkCounts:
        """The job's orders per outcome."""
        rows = await self._pool.fetch(
            "SELECT outcome, count(*) AS n FROM bulk_cancellation_items"
            " WHERE shop_id=$1 AND bulk_id=$2 AND outcome <> 'pending' GROUP BY outcome",
            shop_id,
            bulk_id,
        )
        return BulkCounts.of({BulkOutcome(r["outcome"]): int(r["n"]) for r in rows})

    # ------------------------------------------------------------------ matching orders

    async def matching_orders(
        self, shop_id: str, sku: str, *, after: str | None, limit: int
    ) -> list[str]:
        """Ids of the shop's orders that still hold uncanceled units of ``sku``, after the
        keyset cursor ``after``, in order.

        Canceled orders are left out; shipped ones are not (they are refused with
        ``order_shipped``, so the merchant sees them).
        """
        rows = await self._pool.fetch(
            """SELECT DISTINCT i.order_id FROM order_items i
               JOIN orders o ON o.shop_id = i.shop_id AND o.order_id = i.order_id
               WHERE i.shop_id=$1 AND i.sku=$2 AND i.quantity > i.canceled_quantity
                 AND o.status <> 'canceled' AND ($3::text IS NULL OR i.order_id > $3)
               ORDER BY i.order_id LIMIT $4""",
            shop_id,
            sku,
            after,
            limit,
        )
        return [r["order_id"] for r in rows]

    # ------------------------------------------------------------------ outcomes

    async def known_outcomes(
        self, shop_id: str, bulk_id: str, order_ids: Sequence[str]
    ) -> dict[str, KnownOutcome]:
        """What earlier attempts of the job recorded for these orders."""
        rows = await self._pool.fetch(
            "SELECT order_id, outcome, cancellation_id, items FROM bulk_cancellation_items"
            " WHERE shop_id=$1 AND bulk_id=$2 AND order_id = ANY($3::text[])",
            shop_id,
            bulk_id,
            list(order_ids),
        )
        return {
            r["order_id"]: KnownOutcome(r["outcome"], r["cancellation_id"], _items(r["items"]))
            for r in rows
        }

    async def pending_orders(self, shop_id: str, bulk_id: str) -> list[str]:
        """Orders whose start an earlier attempt of the job began and did not finish."""
        rows = await self._pool.fetch(
            "SELECT order_id FROM bulk_cancellation_items"
            " WHERE shop_id=$1 AND bulk_id=$2 AND outcome='pending' ORDER BY order_id",
            shop_id,
            bulk_id,
        )
        return [r["order_id"] for r in rows]

    async def record_intent(
        self,
        shop_id: str,
        bulk_id: str,
        order_id: str,
        cancellation_id: str,
        items: list[CanceledItem] | None,
    ) -> None:
        """Say which cancellation the job is about to start for the order, before it does."""
        await self._pool.execute(
            "INSERT INTO bulk_cancellation_items (shop_id, bulk_id, order_id, outcome,"
            " cancellation_id, items) VALUES ($1, $2, $3, 'pending', $4, $5)"
            " ON CONFLICT DO NOTHING",
            shop_id,
            bulk_id,
            order_id,
            cancellation_id,
            _items_json(items),
        )

    async def record_outcome(
        self,
        shop_id: str,
        bulk_id: str,
        order_id: str,
        outcome: BulkOutcome,
        *,
        cancellation_id: str | None = None,
        items: list[CanceledItem] | None = None,
        error: BulkError | None = None,
    ) -> None:
        """The order's outcome; a final outcome is never overwritten."""
        await self._pool.execute(
            """INSERT INTO bulk_cancellation_items (shop_id, bulk_id, order_id, outcome,
                 cancellation_id, items, error_code, message)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (shop_id, bulk_id, order_id) DO UPDATE SET outcome=$4,
                 cancellation_id=$5, items=$6, error_code=$7, message=$8, at=now()
               WHERE bulk_cancellation_items.outcome = 'pending'""",
            shop_id,
            bulk_id,
            order_id,
            outcome.value,
            cancellation_id,
            _items_json(items),
            error.code.value if error else None,
            error.message if error else None,
        )

    async def outcomes(
        self, shop_id: str, bulk_id: str, *, after: str | None, limit: int
    ) -> list[BulkItem]:
        """A page of the job's outcomes by order id, after the keyset cursor ``after``."""
        rows = await self._pool.fetch(
            """SELECT order_id, outcome, cancellation_id, items, error_code, message, at
               FROM bulk_cancellation_items
               WHERE shop_id=$1 AND bulk_id=$2 AND outcome <> 'pending'
                 AND ($3::text IS NULL OR order_id > $3)
               ORDER BY order_id LIMIT $4""",
            shop_id,
            bulk_id,
            after,
            limit,
        )
        return [
            BulkItem(
                order_id=r["order_id"],
                outcome=BulkOutcome(r["outcome"]),
                cancellation_id=r["cancellation_id"],
                items=_items(r["items"]),
                error=(
                    BulkError(code=ErrorCode(r["error_code"]), message=r["message"] or "")
                    if r["error_code"]
                    else None
                ),
                at=r["at"],
            )
            for r in rows
        ]


def _items_json(items: list[CanceledItem] | None) -> str | None:
    return None if items is None else json.dumps([i.model_dump() for i in items])


def _items(raw: Any) -> list[CanceledItem] | None:
    if raw is None:
        return None
    return [CanceledItem(**i) for i in json.loads(raw)]
