"""Activities of the ``BulkCancellation`` workflow: record the job, start a page of orders'
cancellations, record how the job ended.

Each order's cancellation is started through ``CancellationClient.start_cancellation``,
the same update-with-start path as a single merchant-initiated start, so every rule (one
open cancellation per order, only before shipment, the refund plan's checks) holds as it
does there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol

from temporalio import activity

from activities.bulk_store import BulkRepository, KnownOutcome
from activities.database import StoreRepository
from domain.bulk import (
    BulkError,
    BulkOutcome,
    BulkParameters,
    FinishBulkInput,
    RegisterBulkInput,
    StartOrdersInput,
    StartOrdersResult,
    items_to_cancel,
)
from domain.cancellation import (
    OPEN_STATUSES,
    CanceledItem,
    CancellationView,
    Channel,
    InitiatedBy,
)
from domain.contract import cancellation_workflow_id
from domain.errors import CancellationError, ErrorCode
from domain.requests import AcceptRequest, StartRequest

UNAVAILABLE: Final = frozenset(
    {
        ErrorCode.TEMPORAL_UNAVAILABLE,
        ErrorCode.DATABASE_UNAVAILABLE,
        ErrorCode.PROVIDER_UNAVAILABLE,
    }
)
"""Not an order's outcome but a service away for now: the page fails and is retried."""

HEARTBEAT_EVERY_SECONDS: Final = 1.0
"""A page heartbeats while it works, so a worker that died is noticed within the
workflow's heartbeat timeout, not the page's start-to-close."""
STOP_CHECK_SECONDS: Final = 0.25
"""How old the page's knowledge of a stop may be: a stop is seen before the next start
at most this late, and the job row is read at most four times a second per page."""


class CancellationStarter(Protocol):
    """What starts one order's cancellation: ``starter.client.CancellationClient``, handed
    in by ``worker.py`` (activities don't import the client side)."""

    store: StoreRepository

    async def start_cancellation(
        self,
        shop_id: str,
        order_id: str,
        request: StartRequest,
        *,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[CancellationView, bool]:
        """Start the cancellation, or answer the open one (``created`` is ``False``)."""
        ...


class BulkActivities:
    """The store and Temporal side of a bulk cancellation."""

    def __init__(self, client: CancellationStarter) -> None:
        self._client = client
        self._jobs = BulkRepository(client.store.pool)

    @activity.defn
    async def register_bulk_job(self, input: RegisterBulkInput) -> None:
        """Record the job, so the hook can show it from the first moment."""
        await self._jobs.register(input.parameters, input.workflow_id, input.at)

    @activity.defn
    async def finish_bulk_job(self, input: FinishBulkInput) -> None:
        """Record that the job completed or was stopped."""
        await self._jobs.finish(input.shop_id, input.bulk_id, input.status, input.at)

    @activity.defn
    async def start_bulk_orders(self, input: StartOrdersInput) -> StartOrdersResult:
        """Start the cancellations of up to ``input.limit`` more matching orders, reading
        them page by page and starting up to ``concurrency`` at a time (the next page is
        read while the last one's starts still run, so the window never drains between
        pages), writing each order's outcome as it happens.

        A retry (the worker died, the database went away) reads the same orders again:
        orders with an outcome are skipped, and an order whose start was under way is
        recognized by the cancellation id written before the start.
        """
        p = input.parameters
        stop = _StopFlag(lambda: self._jobs.stop_requested(p.shop_id, p.bulk_id))
        window = _Window(p.concurrency)
        after, read, more = input.after, 0, True

        async def one(order_id: str, known: KnownOutcome | None) -> None:
            if not await stop.is_set():
                await self._start_one(p, order_id, known)

        async def finish(order_id: str, known: KnownOutcome | None) -> None:
            # Begun before any stop could be seen by it: finishing it starts nothing new.
            await self._start_one(p, order_id, known)

        async with _heartbeating(), window:
            # Orders an attempt that died was starting may not match any more (their
            # cancellation took the SKU's units): they are finished first, wherever they are.
            unfinished = await self._jobs.pending_orders(p.shop_id, p.bulk_id)
            known = await self._jobs.known_outcomes(p.shop_id, p.bulk_id, unfinished)
            for order_id in unfinished:
                await window.launch(finish(order_id, known.get(order_id)))
            while read < input.limit and not await stop.is_set():
                wanted = min(p.page_size, input.limit - read)
                page = await self._jobs.matching_orders(p.shop_id, p.sku, after=after, limit=wanted)
                known = await self._jobs.known_outcomes(p.shop_id, p.bulk_id, page)
                for order_id in page:
                    if order_id in unfinished or (order_id in known and known[order_id].final):
                        continue
                    await window.launch(one(order_id, known.get(order_id)))
                read += len(page)
                after = page[-1] if page else after
                if len(page) < wanted:
                    more = False
                    break
        stopped = await stop.is_set()
        return StartOrdersResult(
            last_order_id=after,
            more=more and not stopped,
            stopped=stopped,
            counts=await self._jobs.counts(p.shop_id, p.bulk_id),
        )

    async def _start_one(
        self, p: BulkParameters, order_id: str, pending: KnownOutcome | None
    ) -> None:
        """Start one order's cancellation and record its outcome.

        ``pending`` is the row an earlier attempt wrote before it started the order's
        cancellation and then died: the cancellation it names is this job's own.
        """
        record = self._jobs.record_outcome
        shop_id, bulk_id = p.shop_id, p.bulk_id
        if pending is not None and pending.cancellation_id is not None:
            started = await self._client.store.get_cancellation(shop_id, pending.cancellation_id)
            if started is not None:
                await record(
                    shop_id,
                    bulk_id,
                    order_id,
                    BulkOutcome.STARTED,
                    cancellation_id=started.cancellation_id,
                    items=pending.items,
                )
                return
        items: list[CanceledItem] | None = None
        try:
            context = await self._client.store.order_context(shop_id, order_id)
            latest = context.latest
            if latest is not None and latest.status in OPEN_STATUSES:
                mine = pending is not None and latest.cancellation_id == pending.cancellation_id
                await record(
                    shop_id,
                    bulk_id,
                    order_id,
                    BulkOutcome.STARTED if mine else BulkOutcome.ALREADY_OPEN,
                    cancellation_id=latest.cancellation_id,
                    items=pending.items if mine and pending is not None else None,
                )
                return
            items = items_to_cancel(context.order, p.sku)
            intended = cancellation_workflow_id(shop_id, order_id, latest.seq + 1 if latest else 1)
            if pending is None:
                await self._jobs.record_intent(shop_id, bulk_id, order_id, intended, items)
            view, created = await self._client.start_cancellation(
                shop_id, order_id, merchant_start_request(p, items), actor=p.actor
            )
        except CancellationError as err:
            if err.code in UNAVAILABLE:
                raise
            await record(
                shop_id,
                bulk_id,
                order_id,
                BulkOutcome.REFUSED,
                items=items,
                error=BulkError(code=err.code, message=err.message),
            )
            return
        # A start that found its own run (begun by the attempt that died) says "not created".
        ours = created or (pending is not None and view.cancellation_id == pending.cancellation_id)
        await record(
            shop_id,
            bulk_id,
            order_id,
            BulkOutcome.STARTED if ours else BulkOutcome.ALREADY_OPEN,
            cancellation_id=view.cancellation_id,
            items=items if ours else None,
        )


def merchant_start_request(p: BulkParameters, items: list[CanceledItem] | None) -> StartRequest:
    """The merchant-initiated start of one order, accepted with the job's decision."""
    return StartRequest(
        initiated_by=InitiatedBy.MERCHANT,
        channel=Channel.ADMIN,
        reason_code=p.reason_code,
        reason=p.reason,
        items=items,
        accept=AcceptRequest(
            reason_code=p.reason_code,
            reason=p.reason,
            refund_method=p.refund_method,
            restock=p.restock,
            notify_customer=p.notify_customer,
        ),
    )


class _StopFlag:
    """Whether the merchant stopped the job, read from the store at most every
    :data:`STOP_CHECK_SECONDS` (a stop is never undone, so a seen stop stays)."""

    def __init__(self, read: Callable[[], Awaitable[bool]]) -> None:
        self._read = read
        self._set = False
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    async def is_set(self) -> bool:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            fresh = self._checked_at is not None and now - self._checked_at < STOP_CHECK_SECONDS
            if not self._set and not fresh:
                self._set = await self._read()
                self._checked_at = now
            return self._set


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Window:
    """Runs launched starts with at most ``size`` at a time; on leaving, waits for them all.

    When one fails (a service is away), the others are cancelled and the failure raised,
    so the activity's retry takes them all up again.
    """

    def __init__(self, size: int) -> None:
        self._slots = asyncio.Semaphore(size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def launch(self, start: Coroutine[Any, Any, None]) -> None:
        """Wait for a free slot, then run ``start`` in it."""
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            start.close()
            raise self._failure
        task = asyncio.create_task(start)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            for other in self._tasks:
                other.cancel()

    async def __aenter__(self) -> _Window:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if exc_info[0] is None and self._failure is not None:
            raise self._failure
