"""The store's reads of cancellations: one cancellation, an order's, a shop's list, the
context a start checks (order, settings, latest cancellation) and the audit trail and outbox.

:class:`CancellationReads` is one half of
:class:`~activities.database.StoreRepository`; the client side reads through it, so each
query exists once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from activities.orders_store import (
    _ORDER_SELECT,
    _SETTINGS_COLUMNS,
    Conn,
    OrdersStore,
    _lock_order,
    _order_from_row,
)
from domain.cancellation import CancellationStatus, CancellationView
from domain.errors import CancellationError, ErrorCode
from domain.order import Order
from domain.shop import ShopSettings


@dataclass(frozen=True)
class CancellationRow:
    """A cancellation as the projection stores it."""

    cancellation_id: str
    seq: int
    status: CancellationStatus
    view: CancellationView
    created_at: datetime
    run_id: str | None = None
    """The run the cancellation id names (``None`` for rows from before release 2 that
    no run has touched since)."""


class CancellationReads(OrdersStore):
    """Queries that read cancellations, their context and their audit trail."""

    # ------------------------------------------------------------------ orders

    async def order_context(self, shop_id: str, order_id: str) -> OrderContext:
        """The order, its shop's settings and its latest cancellation, in one statement;
        or ``order_not_found``."""
        async with self._pool.acquire() as conn:
            return await _load_order_context(conn, shop_id, order_id, lock=False)

    # ------------------------------------------------------------------ cancellations

    async def cancellations_of_order(self, shop_id: str, order_id: str) -> list[CancellationRow]:
        """An order's cancellations, latest first."""
        rows = await self._pool.fetch(
            "SELECT cancellation_id, seq, status, view, created_at, run_id FROM cancellations"
            " WHERE shop_id=$1 AND order_id=$2 ORDER BY seq DESC",
            shop_id,
            order_id,
        )
        return [_cancellation_row(r) for r in rows]

    async def latest_cancellation(self, shop_id: str, order_id: str) -> CancellationRow | None:
        """An order's latest cancellation, or ``None``; one statement.

        Raises:
            CancellationError: ``order_not_found``.
        """
        row = await self._pool.fetchrow(
            """SELECT c.cancellation_id, c.seq, c.status, c.view, c.created_at, c.run_id
               FROM orders o LEFT JOIN LATERAL (
                 SELECT * FROM cancellations
                 WHERE shop_id=o.shop_id AND order_id=o.order_id ORDER BY seq DESC LIMIT 1
               ) c ON true
               WHERE o.shop_id=$1 AND o.order_id=$2""",
            shop_id,
            order_id,
        )
        if row is None:
            raise CancellationError(
                ErrorCode.ORDER_NOT_FOUND, f"shop {shop_id} has no order {order_id}"
            )
        return None if row["cancellation_id"] is None else _cancellation_row(row)

    async def get_cancellation(self, shop_id: str, cancellation_id: str) -> CancellationRow | None:
        """One cancellation of the shop, or ``None``."""
        row = await self._pool.fetchrow(
            "SELECT cancellation_id, seq, status, view, created_at, run_id FROM cancellations"
            " WHERE shop_id=$1 AND cancellation_id=$2",
            shop_id,
            cancellation_id,
        )
        return None if row is None else _cancellation_row(row)

    async def cancellation_by_start_key(self, shop_id: str, key: str) -> CancellationRow | None:
        """The shop's cancellation started by the request with Idempotency-Key ``key``."""
        row = await self._pool.fetchrow(
            "SELECT cancellation_id, seq, status, view, created_at, run_id FROM cancellations"
            " WHERE shop_id=$1 AND start_key=$2",
            shop_id,
            key,
        )
        return None if row is None else _cancellation_row(row)

    async def list_cancellations(
        self,
        shop_id: str,
        *,
        statuses: Sequence[CancellationStatus] = (),
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[CancellationRow]:
        """A shop's cancellations, newest first, after the keyset cursor ``before``."""
        rows = await self._pool.fetch(
            """SELECT cancellation_id, seq, status, view, created_at, run_id FROM cancellations
               WHERE shop_id=$1
                 AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
                 AND ($3::timestamptz IS NULL OR (created_at, cancellation_id) < ($3, $4))
               ORDER BY created_at DESC, cancellation_id DESC LIMIT $5""",
            shop_id,
            [s.value for s in statuses],
            before[0] if before else None,
            before[1] if before else "",
            limit,
        )
        return [_cancellation_row(r) for r in rows]

    # ------------------------------------------------------------------ audit and outbox

    async def events(self, cancellation_id: str) -> list[dict[str, Any]]:
        """The audit trail of one cancellation, oldest first."""
        rows = await self._pool.fetch(
            "SELECT at, event, actor, detail FROM cancellation_events WHERE cancellation_id=$1"
            " ORDER BY at, event_key",
            cancellation_id,
        )
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    async def outbox(self, shop_id: str) -> list[dict[str, Any]]:
        """A shop's notifications, oldest first."""
        rows = await self._pool.fetch(
            "SELECT message_key, cancellation_id, recipient, customer_id, template, payload"
            " FROM outbox WHERE shop_id=$1 ORDER BY created_at, message_key",
            shop_id,
        )
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


# ---------------------------------------------------------------------- helpers


def _cancellation_row(row: Mapping[str, Any] | asyncpg.Record) -> CancellationRow:
    return CancellationRow(
        cancellation_id=row["cancellation_id"],
        seq=row["seq"],
        status=CancellationStatus(row["status"]),
        view=CancellationView.model_validate_json(row["view"]),
        created_at=row["created_at"],
        run_id=row["run_id"],
    )


# The shop's settings and the order's latest cancellation, beside the order.
_CONTEXT_SELECT = """,
     s.shop_id AS settings_shop, s.customer_cancellation_requests, s.request_reminder_after,
     s.undo_window, s.repayment_window,
     c.cancellation_id, c.seq, c.status AS cancellation_status, c.view, c.created_at,
     c.run_id
   FROM orders o
   LEFT JOIN shops s ON s.shop_id = o.shop_id
   LEFT JOIN LATERAL (
     SELECT cancellation_id, seq, status, view, created_at, run_id FROM cancellations
     WHERE shop_id=o.shop_id AND order_id=o.order_id ORDER BY seq DESC LIMIT 1
   ) c ON true"""


@dataclass(frozen=True)
class OrderContext:
    """What a start checks, read in one statement."""

    order: Order
    settings: ShopSettings
    latest: CancellationRow | None
    """The order's latest cancellation."""


async def _load_order_context(
    conn: Conn, shop_id: str, order_id: str, *, lock: bool
) -> OrderContext:
    """The order, its shop's settings and its latest cancellation (order locked when
    ``lock``)."""
    if lock:
        await _lock_order(conn, shop_id, order_id)
    row = await conn.fetchrow(
        _ORDER_SELECT + _CONTEXT_SELECT + " WHERE o.shop_id=$1 AND o.order_id=$2",
        shop_id,
        order_id,
    )
    order = _order_from_row(row, shop_id, order_id)
    assert row is not None
    settings = (
        ShopSettings(**{k: row[k] for k in _SETTINGS_COLUMNS})
        if row["settings_shop"] is not None
        else ShopSettings()
    )
    latest = (
        None
        if row["cancellation_id"] is None
        else _cancellation_row({**dict(row), "status": row["cancellation_status"]})
    )
    return OrderContext(order=order, settings=settings, latest=latest)
