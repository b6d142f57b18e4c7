"""The store's orders and what backend services set about a shop: orders with their items
and tenders, fulfillment, settings, stock, customers' balances, bank accounts.

``StoreRepository`` (``activities.database``) builds on it with the cancellations. Every
write is one transaction; an order with a cancellation is locked (``order_locked``).
"""

from __future__ import annotations

import json

import asyncpg

from domain.bank import BankAccount, BankAccountRef
from domain.cancellation import (
    OPEN_STATUSES,
)
from domain.errors import CancellationError, ErrorCode
from domain.order import (
    Order,
    OrderDocument,
    OrderItem,
    OrderStatus,
    Tender,
    TenderKind,
)
from domain.shop import ShopSettings

# Pool connections are proxies of connections; helpers accept either.

_SETTINGS_COLUMNS = (
    "customer_cancellation_requests",
    "request_reminder_after",
    "undo_window",
    "repayment_window",
)

_ORDER_SELECT = """SELECT o.customer_id, o.currency, o.status, o.status_before_cancellation,
     o.shipping_fee,
     (SELECT coalesce(json_agg(json_build_object('item_id', i.item_id, 'sku', i.sku,
               'quantity', i.quantity, 'unit_price', i.unit_price,
               'canceled_quantity', i.canceled_quantity) ORDER BY i.position), '[]')
        FROM order_items i WHERE i.shop_id=o.shop_id AND i.order_id=o.order_id) AS items,
     (SELECT coalesce(json_agg(json_build_object('tender_id', t.tender_id,
               'kind', t.kind, 'amount', t.amount, 'payment_id', t.payment_id)
               ORDER BY t.position), '[]')
        FROM tenders t WHERE t.shop_id=o.shop_id AND t.order_id=o.order_id) AS tenders"""

# Pool connections are proxies of connections; helpers accept either.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class OrdersStore:
    """Queries of orders and of what a shop sets; writes are idempotent under retries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, for the queries of the modules beside this one (bulk jobs)."""
        return self._pool

    async def get_order(self, shop_id: str, order_id: str) -> Order:
        """The order with its items and tenders, or ``order_not_found``."""
        async with self._pool.acquire() as conn:
            return await _load_order(conn, shop_id, order_id, lock=False)

    async def put_order(self, shop_id: str, order_id: str, doc: OrderDocument) -> bool:
        """Create or replace an order; ``True`` when it was new.

        Once an order has a cancellation, its cancellations work from its currency, items
        and tenders: those can't be replaced (``order_locked``), and neither can its status
        while a cancellation is open or after it was canceled. Points and credits must be
        in the customer's balance currency (``validation_error``); the first order that
        pays with them sets it.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            existing = await conn.fetchrow(
                "SELECT status FROM orders WHERE shop_id=$1 AND order_id=$2 FOR UPDATE",
                shop_id,
                order_id,
            )
            if existing is not None:
                locked = await self._locked_order_change(conn, shop_id, order_id, doc)
                if locked is not None:
                    await conn.execute(
                        "UPDATE orders SET status=$3, updated_at=now()"
                        " WHERE shop_id=$1 AND order_id=$2",
                        shop_id,
                        order_id,
                        doc.status.value,
                    )
                    return False
                await conn.execute(
                    "DELETE FROM order_items WHERE shop_id=$1 AND order_id=$2", shop_id, order_id
                )
                await conn.execute(
                    "DELETE FROM tenders WHERE shop_id=$1 AND order_id=$2", shop_id, order_id
                )
            await _claim_balance_currency(conn, shop_id, doc)
            await conn.execute(
                """INSERT INTO orders
                     (shop_id, order_id, customer_id, currency, status, shipping_fee)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (shop_id, order_id) DO UPDATE SET customer_id=$3, currency=$4,
                     status=$5, shipping_fee=$6, status_before_cancellation=NULL,
                     updated_at=now()""",
                shop_id,
                order_id,
                doc.customer_id,
                doc.currency,
                doc.status.value,
                doc.shipping_fee,
            )
            await conn.executemany(
                "INSERT INTO order_items (shop_id, order_id, item_id, position, sku, quantity,"
                " unit_price) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (shop_id, order_id, i.item_id, n, i.sku, i.quantity, i.unit_price)
                    for n, i in enumerate(doc.items)
                ],
            )
            await conn.executemany(
                "INSERT INTO tenders (shop_id, order_id, tender_id, position, kind, amount,"
                " payment_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (shop_id, order_id, t.tender_id, n, t.kind.value, t.amount, t.payment_id)
                    for n, t in enumerate(doc.tenders)
                ],
            )
            await conn.execute(
                "INSERT INTO shops (shop_id) VALUES ($1) ON CONFLICT DO NOTHING", shop_id
            )
            return existing is None

    @staticmethod
    async def _locked_order_change(
        conn: Conn, shop_id: str, order_id: str, doc: OrderDocument
    ) -> Order | None:
        """The stored order when it has a cancellation (only its status may then change,
        and only while no cancellation holds it); ``None`` when it may be replaced.

        Raises:
            CancellationError: ``order_locked``.
        """
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE status = ANY($3::text[])) AS open"
            " FROM cancellations WHERE shop_id=$1 AND order_id=$2",
            shop_id,
            order_id,
            [s.value for s in OPEN_STATUSES],
        )
        assert row is not None
        if not row["n"]:
            return None
        order = await _load_order(conn, shop_id, order_id, lock=False)
        same = (
            order.customer_id == doc.customer_id
            and order.currency == doc.currency
            and order.shipping_fee == doc.shipping_fee
            and order.items == doc.items
            and order.tenders == doc.tenders
        )
        if not same:
            raise CancellationError(
                ErrorCode.ORDER_LOCKED,
                f"order {order_id} has a cancellation: its customer, currency, items and"
                " tenders can't be replaced any more (only its status, once no cancellation"
                " holds it)",
            )
        held = row["open"] or order.status in (
            OrderStatus.CANCELED,
            OrderStatus.CANCELLATION_REQUESTED,
            OrderStatus.CANCELLATION_IN_PROGRESS,
        )
        if held and doc.status is not order.status:
            raise CancellationError(
                ErrorCode.ORDER_LOCKED,
                f"order {order_id} is held by a cancellation ({order.status.value});"
                " its status can't be replaced now",
            )
        return order

    async def set_fulfillment_status(
        self, shop_id: str, order_id: str, status: OrderStatus
    ) -> Order:
        """Backend services report fulfillment progress (preparing … delivered)."""
        async with self._pool.acquire() as conn, conn.transaction():
            order = await _load_order(conn, shop_id, order_id, lock=True)
            if order.status in (
                OrderStatus.CANCELED,
                OrderStatus.CANCELLATION_IN_PROGRESS,
                OrderStatus.AWAITING_PAYMENT,
            ):
                # An accepted cancellation is refunding (or has refunded) the order and
                # restocked its items: shipping them now would give the goods away. A
                # request that only waits may still ship; acceptance then says so (rule 1).
                raise CancellationError(
                    ErrorCode.INVALID_TRANSITION,
                    f"order {order_id} is {order.status.value}; it can't be fulfilled",
                )
            column = (
                "status_before_cancellation"
                if order.status_before_cancellation is not None
                else "status"
            )
            await conn.execute(
                f"UPDATE orders SET {column}=$3, updated_at=now() WHERE shop_id=$1 AND order_id=$2",
                shop_id,
                order_id,
                status.value,
            )
            # Shipping while a cancellation waits shows as the order's own status, so the
            # acceptance re-check (rule 1) sees it.
            if status in (OrderStatus.IN_TRANSIT, OrderStatus.DELIVERED):
                await conn.execute(
                    "UPDATE orders SET status=$3 WHERE shop_id=$1 AND order_id=$2",
                    shop_id,
                    order_id,
                    status.value,
                )
            return await _load_order(conn, shop_id, order_id, lock=False)

    async def get_settings(self, shop_id: str) -> ShopSettings:
        """The shop's settings; defaults for a shop that never set any."""
        async with self._pool.acquire() as conn:
            return await _load_settings(conn, shop_id)

    async def put_settings(self, shop_id: str, settings: ShopSettings) -> None:
        """Store the shop's settings."""
        await self._pool.execute(
            """INSERT INTO shops (shop_id, customer_cancellation_requests, request_reminder_after,
                 undo_window, repayment_window) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (shop_id) DO UPDATE SET customer_cancellation_requests=$2,
                 request_reminder_after=$3, undo_window=$4, repayment_window=$5,
                 updated_at=now()""",
            shop_id,
            settings.customer_cancellation_requests,
            settings.request_reminder_after,
            settings.undo_window,
            settings.repayment_window,
        )

    async def get_stock(self, shop_id: str, sku: str) -> int | None:
        """Units available for a SKU, or ``None`` when the shop never stocked it."""
        value = await self._pool.fetchval(
            "SELECT available FROM stock WHERE shop_id=$1 AND sku=$2", shop_id, sku
        )
        return None if value is None else int(value)

    async def put_stock(self, shop_id: str, sku: str, available: int) -> None:
        """Set the units available for a SKU."""
        await self._pool.execute(
            "INSERT INTO stock (shop_id, sku, available) VALUES ($1, $2, $3)"
            " ON CONFLICT (shop_id, sku) DO UPDATE SET available=$3, updated_at=now()",
            shop_id,
            sku,
            available,
        )

    async def get_balances(self, shop_id: str, customer_id: str) -> tuple[int, int] | None:
        """A customer's (points, credits), or ``None`` when unknown."""
        row = await self._pool.fetchrow(
            "SELECT points, credits FROM customers WHERE shop_id=$1 AND customer_id=$2",
            shop_id,
            customer_id,
        )
        return None if row is None else (int(row["points"]), int(row["credits"]))

    async def put_balances(
        self,
        shop_id: str,
        customer_id: str,
        points: int,
        credits: int,
        currency: str | None = None,
    ) -> str | None:
        """Set a customer's balances (and their currency, once); answers the currency.

        Raises:
            CancellationError: ``validation_error`` when ``currency`` differs from the
                currency the balances already have.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO customers (shop_id, customer_id, points, credits, currency)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (shop_id, customer_id) DO UPDATE SET points=$3, credits=$4,"
                " currency=coalesce(customers.currency, $5), updated_at=now()"
                " RETURNING currency",
                shop_id,
                customer_id,
                points,
                credits,
                currency,
            )
            assert row is not None
            held = row["currency"]
            if currency is not None and held != currency:
                raise CancellationError(
                    ErrorCode.VALIDATION_ERROR,
                    f"customer {customer_id}'s points and credits are in {held}, not {currency}",
                )
            return None if held is None else str(held)

    async def balance_currency(self, shop_id: str, customer_id: str) -> str | None:
        """The currency of a customer's points and credits, once known."""
        value = await self._pool.fetchval(
            "SELECT currency FROM customers WHERE shop_id=$1 AND customer_id=$2",
            shop_id,
            customer_id,
        )
        return None if value is None else str(value)

    async def store_bank_account(self, shop_id: str, account: BankAccount) -> BankAccountRef:
        """Keep a bank account in the store database; workflows carry only the reference."""
        ref = await self._pool.fetchval(
            "INSERT INTO bank_accounts (ref, shop_id, bank, account_number, holder)"
            " VALUES ('ba_' || md5(random()::text || clock_timestamp()::text), $1, $2, $3, $4)"
            " RETURNING ref",
            shop_id,
            account.bank,
            account.account_number,
            account.holder,
        )
        return BankAccountRef(ref=ref, bank=account.bank, masked_number=account.masked_number)


async def _load_order(conn: Conn, shop_id: str, order_id: str, *, lock: bool) -> Order:
    """The order with its items and tenders, in one statement (locked first when ``lock``)."""
    if lock:
        await _lock_order(conn, shop_id, order_id)
    row = await conn.fetchrow(
        _ORDER_SELECT + " FROM orders o WHERE o.shop_id=$1 AND o.order_id=$2",
        shop_id,
        order_id,
    )
    return _order_from_row(row, shop_id, order_id)


async def _lock_order(conn: Conn, shop_id: str, order_id: str) -> None:
    """Take the order's row lock before reading it with its items: a read that waits for
    the lock inside one statement would see the items as they were before the wait."""
    await conn.execute(
        "SELECT 1 FROM orders WHERE shop_id=$1 AND order_id=$2 FOR UPDATE", shop_id, order_id
    )


def _order_from_row(row: asyncpg.Record | None, shop_id: str, order_id: str) -> Order:
    if row is None:
        raise CancellationError(
            ErrorCode.ORDER_NOT_FOUND, f"shop {shop_id} has no order {order_id}"
        )
    items = json.loads(row["items"])
    return Order.model_construct(
        shop_id=shop_id,
        order_id=order_id,
        customer_id=row["customer_id"],
        currency=row["currency"],
        status=OrderStatus(row["status"]),
        status_before_cancellation=(
            OrderStatus(row["status_before_cancellation"])
            if row["status_before_cancellation"]
            else None
        ),
        shipping_fee=int(row["shipping_fee"]),
        items=[
            OrderItem(
                item_id=i["item_id"],
                sku=i["sku"],
                quantity=i["quantity"],
                unit_price=i["unit_price"],
            )
            for i in items
        ],
        canceled_quantities={
            i["item_id"]: i["canceled_quantity"] for i in items if i["canceled_quantity"]
        },
        tenders=[Tender(**t) for t in json.loads(row["tenders"])],
    )


async def _claim_balance_currency(conn: Conn, shop_id: str, doc: OrderDocument) -> None:
    """Make sure the customer exists; an order paying points or credits fixes (or must
    match) the currency of the customer's balances."""
    uses_balances = any(t.kind in (TenderKind.POINTS, TenderKind.CREDITS) for t in doc.tenders)
    held = await conn.fetchval(
        "INSERT INTO customers (shop_id, customer_id, currency) VALUES ($1, $2, $3)"
        " ON CONFLICT (shop_id, customer_id) DO UPDATE"
        " SET currency=coalesce(customers.currency, EXCLUDED.currency)"
        " RETURNING currency",
        shop_id,
        doc.customer_id,
        doc.currency if uses_balances else None,
    )
    if uses_balances and held != doc.currency:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            f"customer {doc.customer_id}'s points and credits are in {held};"
            f" this order is in {doc.currency}",
        )


async def _load_settings(conn: Conn, shop_id: str) -> ShopSettings:
    row = await conn.fetchrow(
        "SELECT customer_cancellation_requests, request_reminder_after, undo_window,"
        " repayment_window FROM shops WHERE shop_id=$1",
        shop_id,
    )
    return ShopSettings() if row is None else ShopSettings(**dict(row))
