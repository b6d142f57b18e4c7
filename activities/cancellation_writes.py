"""The store's writes of cancellations: opening one (rules 1 to 3) and applying a
transition's change set (the cancellation, the order, stock, balances, refund lines,
notifications, audit and events) in one transaction each.

:class:`CancellationWrites` is one half of
:class:`~activities.database.StoreRepository`. Every write is idempotent under retries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from activities.cancellation_reads import _load_order_context
from activities.events import (
    NewEvent,
    closing_time,
    record_events,
    transition_events,
)
from activities.orders_store import Conn, OrdersStore
from domain.cancellation import (
    OPEN_STATUSES,
    CancellationView,
    InitiatedBy,
    RefundLine,
    StartCancellationInput,
)
from domain.changes import BalanceChange, ChangeSet, StockChange
from domain.errors import CancellationError, ErrorCode
from domain.events import CLOSING_STATUSES, EventType
from domain.order import (
    SHIPPED_STATUSES,
    Order,
    OrderStatus,
)
from domain.rules import check_can_start
from domain.scope import scope_of
from domain.shop import ShopSettings


@dataclass(frozen=True)
class OpenedCancellation:
    """What opening a cancellation found in the store."""

    order: Order
    settings: ShopSettings
    refunded_by_tender: dict[str, int]
    created_at: datetime


class CancellationWrites(OrdersStore):
    """The writes of cancellations; each is one transaction, idempotent under retries."""

    async def open_cancellation(
        self,
        start: StartCancellationInput,
        seq: int,
        view: CancellationView,
        at: datetime,
        run_id: str | None = None,
    ) -> OpenedCancellation:
        """Record a new cancellation and hold the order for it (rules 1 to 3).

        Idempotent: a retry finds its own row and answers as the first attempt did.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            context = await _load_order_context(conn, start.shop_id, start.order_id, lock=True)
            order, settings = context.order, context.settings
            rows = await conn.fetch(
                "SELECT cancellation_id, created_at, opened_order FROM cancellations"
                " WHERE shop_id=$1 AND order_id=$2"
                " AND (cancellation_id=$3 OR status = ANY($4::text[]))",
                start.shop_id,
                start.order_id,
                start.cancellation_id,
                [s.value for s in OPEN_STATUSES],
            )
            mine = next((r for r in rows if r["cancellation_id"] == start.cancellation_id), None)
            if mine is None:
                check_can_start(order, settings, start.initiated_by, start.channel)
                scope = scope_of(order, start.items)
                if scope.is_last and view.order_status is OrderStatus.CANCELLATION_REQUESTED:
                    new_status = OrderStatus.CANCELLATION_REQUESTED
                else:
                    # A partial cancellation leaves the order's status (and its fulfillment)
                    # alone; a merchant's cancellation sets it at acceptance.
                    new_status = order.status
                view = view.model_copy(update={"order_status": new_status})
                if rows:
                    raise CancellationError(
                        ErrorCode.INVALID_TRANSITION,
                        f"order {start.order_id} already has an open cancellation"
                        f" {rows[0]['cancellation_id']}",
                    )
                await conn.execute(
                    """INSERT INTO cancellations (cancellation_id, shop_id, order_id, seq, status,
                         initiated_by, channel, reason_code, reason, items, currency, view,
                         created_at, updated_at, start_key)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13,
                         $14)""",
                    start.cancellation_id,
                    start.shop_id,
                    start.order_id,
                    seq,
                    view.status.value,
                    start.initiated_by.value,
                    start.channel.value,
                    start.reason_code.value if start.reason_code else None,
                    start.reason,
                    _json([i.model_dump() for i in start.items]) if start.items else None,
                    order.currency,
                    view.model_dump_json(),
                    at,
                    start.start_key,
                )
                if scope.is_last:
                    await conn.execute(
                        "UPDATE orders SET status_before_cancellation=status, status=$3,"
                        " updated_at=now() WHERE shop_id=$1 AND order_id=$2",
                        start.shop_id,
                        start.order_id,
                        new_status.value,
                    )
                    order = order.model_copy(
                        update={"status": new_status, "status_before_cancellation": order.status}
                    )
                await _record_request(conn, start, view, at)
                await conn.execute(
                    "UPDATE cancellations SET opened_order=$2 WHERE cancellation_id=$1",
                    start.cancellation_id,
                    order.model_dump_json(),
                )
                created_at = at
            else:
                created_at = mine["created_at"]
                if mine["opened_order"] is not None:
                    # A retry (a worker died after the first attempt committed) answers with
                    # the order as it opened: an acceptance committed since has canceled its
                    # items, and the run would find nothing left to cancel.
                    order = Order.model_validate_json(mine["opened_order"])
            if run_id is not None:
                # The run that opened the row owns it: reads and actions pin this run.
                await conn.execute(
                    "UPDATE cancellations SET run_id=$3 WHERE cancellation_id=$1"
                    " AND shop_id=$2 AND run_id IS NULL",
                    start.cancellation_id,
                    start.shop_id,
                    run_id,
                )
            refunded = await conn.fetch(
                """SELECT r.tender_id, sum(r.amount) AS amount FROM refund_lines r
                   JOIN cancellations c USING (cancellation_id)
                   WHERE c.shop_id=$1 AND c.order_id=$2 AND c.cancellation_id <> $3
                     AND c.status = 'canceled' AND r.status = 'succeeded'
                   GROUP BY r.tender_id""",
                start.shop_id,
                start.order_id,
                start.cancellation_id,
            )
            return OpenedCancellation(
                order=order,
                settings=settings,
                refunded_by_tender={r["tender_id"]: int(r["amount"]) for r in refunded},
                created_at=created_at,
            )

    async def apply_changes(
        self, changes: ChangeSet, shop_id: str, order_id: str
    ) -> tuple[bool, OrderStatus]:
        """Apply a transition's change set in one transaction.

        Returns whether it was applied now (``False``: an earlier attempt did) and the
        order's status afterwards. The audit event's key is the idempotency key: a retry
        of an applied change set finds the event and changes nothing.
        """
        view = changes.view
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                "SELECT status FROM orders WHERE shop_id=$1 AND order_id=$2 FOR UPDATE",
                shop_id,
                order_id,
            )
            current = OrderStatus(status)
            # The event, and with it any transition the workflow made without a store write
            # of its own (a provider refund settling, say): one statement for all of them.
            entries = [
                (f"{view.cancellation_id}:{n:04d}:{entry.event}", entry)
                for n, entry in enumerate(view.history[:-1], start=1)
            ] + [(changes.event_key, changes.event)]
            inserted = await conn.fetch(
                """INSERT INTO cancellation_events (event_key, cancellation_id, shop_id, at,
                     event, actor, detail)
                   SELECT k, $2, $3, a, e, w, d::jsonb
                   FROM unnest($1::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[])
                     AS x(k, a, e, w, d)
                   ON CONFLICT (event_key) DO NOTHING RETURNING event_key""",
                [key for key, _ in entries],
                view.cancellation_id,
                shop_id,
                [entry.at for _, entry in entries],
                [entry.event for _, entry in entries],
                [entry.actor for _, entry in entries],
                [_json(entry.detail) for _, entry in entries],
            )
            if changes.event_key not in {r["event_key"] for r in inserted}:
                # An earlier attempt applied this change set (and recorded those entries).
                return False, current
            if changes.order is not None:
                if changes.order.require_unshipped and current in SHIPPED_STATUSES:
                    raise CancellationError(
                        ErrorCode.ORDER_SHIPPED,
                        f"order {order_id} is {current.value}; process it as a return instead",
                    )
                current = await _change_order(conn, shop_id, order_id, changes)
                view = view.model_copy(update={"order_status": current})
            await _restock(conn, shop_id, [m for m in changes.stock if m.delta > 0])
            for stock in changes.stock:
                if stock.delta < 0:
                    await _move_stock(conn, shop_id, stock.sku, stock.delta, stock.key)
            for balance in changes.balances:
                await _move_balance(conn, shop_id, balance)
            for line in changes.refund_lines:
                await _upsert_refund_line(conn, view.cancellation_id, line)
            for n, note in enumerate(changes.notifications):
                await conn.execute(
                    "INSERT INTO outbox (message_key, shop_id, cancellation_id, recipient,"
                    " customer_id, template, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT DO NOTHING",
                    f"{changes.event_key}:{n}",
                    shop_id,
                    view.cancellation_id,
                    note.recipient.value,
                    changes.customer_id if note.recipient == "customer" else None,
                    note.template,
                    _json(note.payload),
                )
            # Events out (docs/events.md): in this transaction, so they exist exactly when
            # the transition does.
            recorded_keys = {r["event_key"] for r in inserted}
            recorded = [(k, e.event, e.at) for k, e in entries if k in recorded_keys]
            await record_events(
                conn,
                shop_id,
                view,
                transition_events(changes, view, recorded),
                closes_at=closing_time(view),
                closed=view.status in CLOSING_STATUSES,
            )
            await conn.execute(
                """UPDATE cancellations SET status=$2, refund_method=$3, refundable=$4, refunded=$5,
                     needs_attention=$6, view=$7, updated_at=$8, canceled_at=$9, undo_until=$10,
                     customer_note=$11, reason_code=$12, reason=$13
                   WHERE cancellation_id=$1""",
                view.cancellation_id,
                view.status.value,
                view.refund_method.value if view.refund_method else None,
                view.refundable.amount if view.refundable else None,
                view.refunded.amount if view.refunded else 0,
                view.needs_attention.value if view.needs_attention else None,
                view.model_dump_json(),
                changes.event.at,
                view.canceled_at,
                view.undo_until,
                view.customer_note,
                view.reason_code.value if view.reason_code else None,
                view.reason,
            )
            return True, current

    async def save_view(self, view: CancellationView) -> None:
        """Refresh the stored view without an audited transition (the run closed)."""
        await self._pool.execute(
            "UPDATE cancellations SET view=$2 WHERE cancellation_id=$1",
            view.cancellation_id,
            view.model_dump_json(),
        )


# ---------------------------------------------------------------------- helpers


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


async def _record_request(
    conn: Conn, start: StartCancellationInput, view: CancellationView, at: datetime
) -> None:
    """The audit event of the request, and the merchant's notice of a customer request."""
    first = view.history[0] if view.history else None
    # One statement: the event, and (for a customer's request) the merchant's notice.
    await conn.execute(
        """WITH event AS (
             INSERT INTO cancellation_events (event_key, cancellation_id, shop_id, at, event,
               actor, detail)
             VALUES ($1, $2, $3, $4, 'requested', $5, $6) ON CONFLICT DO NOTHING)
           INSERT INTO outbox (message_key, shop_id, cancellation_id, recipient, template,
             payload)
           SELECT $7, $3, $2, 'merchant', 'new_request', $8::jsonb WHERE $9
           ON CONFLICT DO NOTHING""",
        f"{start.cancellation_id}:0001:requested",
        start.cancellation_id,
        start.shop_id,
        at,
        start.actor,
        _json(first.detail if first else {}),
        f"{start.cancellation_id}:0001:requested:0",
        _json({"order_id": start.order_id, "reason_code": start.reason_code}),
        start.initiated_by is InitiatedBy.CUSTOMER,
    )
    requested = NewEvent(EventType.REQUESTED, f"{start.cancellation_id}:0001:requested", at)
    await record_events(conn, start.shop_id, view, [requested])


async def _change_order(conn: Conn, shop_id: str, order_id: str, changes: ChangeSet) -> OrderStatus:
    change = changes.order
    assert change is not None
    if change.canceled_items:
        deltas: dict[str, int] = {}
        for item in change.canceled_items:
            deltas[item.item_id] = deltas.get(item.item_id, 0) + item.delta
        updated = await conn.fetch(
            "UPDATE order_items i SET canceled_quantity = i.canceled_quantity + c.d"
            " FROM unnest($3::text[], $4::integer[]) AS c(item, d)"
            " WHERE i.shop_id=$1 AND i.order_id=$2 AND i.item_id = c.item"
            " AND i.canceled_quantity + c.d BETWEEN 0 AND i.quantity RETURNING i.item_id",
            shop_id,
            order_id,
            list(deltas),
            list(deltas.values()),
        )
        refused = sorted(set(deltas) - {r["item_id"] for r in updated})
        if refused:
            # The transaction rolls back: no quantity changed.
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR,
                f"item {refused[0]}: can't change its canceled quantity by {deltas[refused[0]]}",
            )
    if change.keep_status:
        status = await conn.fetchval(
            "SELECT status FROM orders WHERE shop_id=$1 AND order_id=$2", shop_id, order_id
        )
    elif change.status is None:
        status = await conn.fetchval(
            "UPDATE orders SET status=coalesce(status_before_cancellation, status),"
            " status_before_cancellation=NULL, updated_at=now() WHERE shop_id=$1 AND order_id=$2"
            " RETURNING status",
            shop_id,
            order_id,
        )
    else:
        status = await conn.fetchval(
            "UPDATE orders SET status=$3, updated_at=now() WHERE shop_id=$1 AND order_id=$2"
            " RETURNING status",
            shop_id,
            order_id,
            change.status.value,
        )
    return OrderStatus(status)


async def _restock(conn: Conn, shop_id: str, moves: list[StockChange]) -> None:
    """Put items back in stock, each movement at most once, in one statement."""
    if not moves:
        return
    await conn.execute(
        """WITH moved AS (
             INSERT INTO stock_movements (movement_key, shop_id, sku, delta)
             SELECT k, $1, s, d FROM unnest($2::text[], $3::text[], $4::bigint[]) AS m(k, s, d)
             ON CONFLICT DO NOTHING RETURNING sku, delta)
           INSERT INTO stock (shop_id, sku, available)
           SELECT $1, sku, sum(delta) FROM moved GROUP BY sku
           ON CONFLICT (shop_id, sku) DO UPDATE
             SET available = stock.available + EXCLUDED.available, updated_at=now()""",
        shop_id,
        [m.key for m in moves],
        [m.sku for m in moves],
        [m.delta for m in moves],
    )


async def _move_stock(conn: Conn, shop_id: str, sku: str, delta: int, key: str) -> None:
    moved = await conn.fetchval(
        "INSERT INTO stock_movements (movement_key, shop_id, sku, delta) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        key,
        shop_id,
        sku,
        delta,
    )
    if moved is None:
        return
    if delta < 0:
        available = await conn.fetchval(
            "SELECT available FROM stock WHERE shop_id=$1 AND sku=$2 FOR UPDATE", shop_id, sku
        )
        if available is None or available < -delta:
            raise CancellationError(
                ErrorCode.OUT_OF_STOCK, f"only {available or 0} of {sku} left, {-delta} needed"
            )
        # An INSERT … ON CONFLICT checks the proposed row first, and -n would fail CHECK.
        await conn.execute(
            "UPDATE stock SET available = available + $3, updated_at=now()"
            " WHERE shop_id=$1 AND sku=$2",
            shop_id,
            sku,
            delta,
        )
        return
    await conn.execute(
        "INSERT INTO stock (shop_id, sku, available) VALUES ($1, $2, $3)"
        " ON CONFLICT (shop_id, sku) DO UPDATE SET available = stock.available + $3,"
        " updated_at=now()",
        shop_id,
        sku,
        delta,
    )


async def _move_balance(conn: Conn, shop_id: str, change: BalanceChange) -> None:
    moved = await conn.fetchval(
        "INSERT INTO balance_movements (movement_key, shop_id, customer_id, balance, delta)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
        change.key,
        shop_id,
        change.customer_id,
        change.balance.value,
        change.delta,
    )
    if moved is None:
        return
    column = "points" if change.balance == "points" else "credits"
    if change.delta < 0:
        held = await conn.fetchval(
            f"SELECT {column} FROM customers WHERE shop_id=$1 AND customer_id=$2 FOR UPDATE",
            shop_id,
            change.customer_id,
        )
        if (held or 0) < -change.delta:
            raise CancellationError(
                ErrorCode.INVALID_TRANSITION,
                f"customer {change.customer_id} has {held or 0} {column} left and"
                f" {-change.delta} would be taken back; they were spent meanwhile",
            )
    await conn.execute(
        "INSERT INTO customers (shop_id, customer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        shop_id,
        change.customer_id,
    )
    await conn.execute(
        f"UPDATE customers SET {column} = {column} + $3, updated_at=now()"
        " WHERE shop_id=$1 AND customer_id=$2",
        shop_id,
        change.customer_id,
        change.delta,
    )


async def _upsert_refund_line(conn: Conn, cancellation_id: str, line: RefundLine) -> None:
    await conn.execute(
        """INSERT INTO refund_lines (refund_id, cancellation_id, tender_id, tender_kind, method,
             channel, amount, status, provider_reference, failure, bank_account_ref,
             confirmation_reference)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (refund_id) DO UPDATE SET method=$5, channel=$6, status=$8,
             provider_reference=$9, failure=$10, bank_account_ref=$11,
             confirmation_reference=$12, updated_at=now()""",
        line.refund_id,
        cancellation_id,
        line.tender_id,
        line.tender_kind.value,
        line.method.value,
        line.channel.value,
        line.amount,
        line.status.value,
        line.provider_reference,
        line.failure,
        line.bank_account.ref if line.bank_account else None,
        line.confirmation_reference,
    )
