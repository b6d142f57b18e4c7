"""Bulk cancellation for backend services, the CLI and the hook (spec 7.6).

:class:`BulkClient` starts a ``BulkCancellation`` job, or answers a dry run with what the
job would do; reads a job and its outcomes; stops it. Jobs are read from the store, which
the job's activities keep current, not from Temporal's visibility.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from typing import Final

from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.bulk_store import BulkRepository
from domain.bulk import (
    BulkCancellationInput,
    BulkCounts,
    BulkDryRun,
    BulkError,
    BulkItemPage,
    BulkJob,
    BulkOutcome,
    BulkParameters,
    BulkRequest,
    BulkStatus,
    DryRunOrder,
    bulk_workflow_id,
    check_bulk_request,
    items_to_cancel,
)
from domain.cancellation import OPEN_STATUSES, Channel, InitiatedBy
from domain.contract import TASK_QUEUE
from domain.errors import CancellationError, ErrorCode
from domain.refund_plan import RefundChannel, refund_channel
from domain.rules import check_can_start
from starter import cursors
from starter.client import CancellationClient
from workflows.bulk_cancellation import BulkCancellationWorkflow
from workflows.search_attributes import bulk_search_attributes

REGISTER_WAIT_SECONDS: Final = 30.0
"""How long a start waits for the job to be recorded before answering without it."""
DRY_RUN_MAX_ORDERS: Final = 1000
"""A dry run lists at most this many orders (each with its refund plan)."""
DRY_RUN_PAGE: Final = 200
DEFAULT_ITEMS_LIMIT: Final = 100
MAX_ITEMS_LIMIT: Final = 1000


def bulk_id_for(shop_id: str, idempotency_key: str | None) -> str:
    """A new job's id: derived from the shop's Idempotency-Key when there is one, so a
    repeat after the hook died between starting the job and recording its answer finds
    the job (keys belong to a shop: another shop's same key is another job)."""
    if idempotency_key is None:
        return f"b{uuid.uuid4().hex}"
    scoped = f"{shop_id}\x1f{idempotency_key}"  # \x1f is in neither alphabet
    return "k" + hashlib.sha256(scoped.encode()).hexdigest()[:32]


class BulkClient:
    """Start, read and stop bulk cancellations of one deployment."""

    def __init__(
        self,
        client: CancellationClient,
        *,
        task_queue: str = TASK_QUEUE,
        concurrency: int | None = None,
        page_size: int | None = None,
        orders_per_run: int | None = None,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._jobs = BulkRepository(client.store.pool)
        self._tuning = {
            name: value
            for name, value in (
                ("concurrency", concurrency),
                ("page_size", page_size),
                ("orders_per_run", orders_per_run),
            )
            if value is not None
        }

    # ------------------------------------------------------------------ starting

    async def start(
        self,
        shop_id: str,
        request: BulkRequest,
        *,
        actor: str = "merchant",
        idempotency_key: str | None = None,
    ) -> BulkJob:
        """Start a job (at once; it runs on): the job, with its counts so far.

        The same ``idempotency_key`` always names the same job: a repeat answers with it.
        """
        check_bulk_request(request)
        bulk_id = bulk_id_for(shop_id, idempotency_key)
        parameters = BulkParameters(
            shop_id=shop_id,
            bulk_id=bulk_id,
            sku=request.sku,
            reason_code=request.reason_code,
            reason=request.reason,
            refund_method=request.refund_method,
            restock=request.restock,
            notify_customer=request.notify_customer,
            actor=actor,
            **self._tuning,
        )
        workflow_id = bulk_workflow_id(shop_id, bulk_id)
        operation = WithStartWorkflowOperation(
            BulkCancellationWorkflow.run,
            BulkCancellationInput(parameters=parameters),
            id=workflow_id,
            task_queue=self._task_queue,
            # A repeat joins the running job; a finished job is never started again.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=bulk_search_attributes(shop_id, bulk_id),
            static_summary=f"Bulk cancellation of {request.sku} in shop {shop_id}",
            static_details=(
                f"Shop: {shop_id}\nSKU: {request.sku}\nReason: {request.reason_code.value}\n"
                f"Refund method: {request.refund_method.value}\nStarted by: {actor}"
            ),
        )
        try:
            async with asyncio.timeout(REGISTER_WAIT_SECONDS):
                job: BulkJob = await self._client.temporal.execute_update_with_start_workflow(
                    "registered", result_type=BulkJob, start_workflow_operation=operation
                )
            return job
        except WorkflowAlreadyStartedError:
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await operation.workflow_handle()
            return await self.get(shop_id, bulk_id)  # the job ran and finished
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # No worker took the job up in time: it starts when one does.
            return BulkJob(
                bulk_id=bulk_id,
                shop_id=shop_id,
                workflow_id=workflow_id,
                sku=request.sku,
                status=BulkStatus.RUNNING,
                counts=BulkCounts(),
                reason_code=request.reason_code,
                refund_method=request.refund_method,
                restock=request.restock,
                notify_customer=request.notify_customer,
            )
        except RPCError as err:
            raise _rpc_error(err) from None

    async def dry_run(self, shop_id: str, request: BulkRequest) -> BulkDryRun:
        """What a job would do now, order by order with each refund plan; changes nothing."""
        check_bulk_request(request)
        orders: list[DryRunOrder] = []
        after: str | None = None
        truncated = False
        while len(orders) < DRY_RUN_MAX_ORDERS:
            page = await self._jobs.matching_orders(
                shop_id, request.sku, after=after, limit=DRY_RUN_PAGE
            )
            for order_id in page:
                if len(orders) == DRY_RUN_MAX_ORDERS:
                    truncated = True
                    break
                orders.append(await self._dry_run_order(shop_id, order_id, request))
            if len(page) < DRY_RUN_PAGE or truncated:
                break
            after = page[-1]
        if not truncated and len(orders) == DRY_RUN_MAX_ORDERS:
            more = await self._jobs.matching_orders(
                shop_id, request.sku, after=orders[-1].order_id, limit=1
            )
            truncated = bool(more)
        counts = BulkCounts.of(
            {outcome: sum(1 for o in orders if o.outcome is outcome) for outcome in BulkOutcome}
        )
        return BulkDryRun(sku=request.sku, counts=counts, orders=orders, truncated=truncated)

    async def _dry_run_order(
        self, shop_id: str, order_id: str, request: BulkRequest
    ) -> DryRunOrder:
        """The same checks a start makes, in the same order, and the quote's plan."""
        try:
            context = await self._client.store.order_context(shop_id, order_id)
            latest = context.latest
            if latest is not None and latest.status in OPEN_STATUSES:
                return DryRunOrder(
                    order_id=order_id,
                    outcome=BulkOutcome.ALREADY_OPEN,
                    cancellation_id=latest.cancellation_id,
                )
            check_can_start(context.order, context.settings, InitiatedBy.MERCHANT, Channel.ADMIN)
            items = items_to_cancel(context.order, request.sku)
            quote = await self._client.quote(shop_id, order_id, request.refund_method, items)
            if any(
                refund_channel(line.tender_kind, line.method) is RefundChannel.BANK_DEPOSIT
                for line in quote.lines
            ):
                raise CancellationError(
                    ErrorCode.VALIDATION_ERROR,
                    "this refund goes out by bank deposit: bank_account is required",
                )
        except CancellationError as err:
            if err.code in (ErrorCode.TEMPORAL_UNAVAILABLE, ErrorCode.DATABASE_UNAVAILABLE):
                raise
            return DryRunOrder(
                order_id=order_id,
                outcome=BulkOutcome.REFUSED,
                error=BulkError(code=err.code, message=err.message),
            )
        return DryRunOrder(
            order_id=order_id,
            outcome=BulkOutcome.STARTED,
            items=items,
            currency=quote.currency,
            refundable=quote.refundable,
            lines=quote.lines,
        )

    # ------------------------------------------------------------------ reading and stopping

    async def get(self, shop_id: str, bulk_id: str) -> BulkJob:
        """The job with its counts, or ``bulk_cancellation_not_found``."""
        job = await self._jobs.get(shop_id, bulk_id)
        if job is None:
            raise CancellationError(
                ErrorCode.BULK_CANCELLATION_NOT_FOUND,
                f"shop {shop_id} has no bulk cancellation {bulk_id}",
            )
        return job

    async def items(
        self,
        shop_id: str,
        bulk_id: str,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_ITEMS_LIMIT,
    ) -> BulkItemPage:
        """A page of the job's outcomes by order id; pass ``next_cursor`` back for more."""
        await self.get(shop_id, bulk_id)
        after = cursors.unwrap(cursor) if cursor else None
        rows = await self._jobs.outcomes(shop_id, bulk_id, after=after, limit=limit + 1)
        next_cursor = cursors.wrap(rows[limit - 1].order_id) if len(rows) > limit else None
        return BulkItemPage(items=rows[:limit], next_cursor=next_cursor)

    async def stop(self, shop_id: str, bulk_id: str) -> BulkJob:
        """Start no further orders; what was started goes on. Stopping twice is harmless."""
        if not await self._jobs.request_stop(shop_id, bulk_id):
            await self.get(shop_id, bulk_id)  # raises not found
        handle = self._client.temporal.get_workflow_handle_for(
            BulkCancellationWorkflow.run, bulk_workflow_id(shop_id, bulk_id)
        )
        try:
            await handle.signal(BulkCancellationWorkflow.stop)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it finished already
                raise _rpc_error(err) from None
        return await self.get(shop_id, bulk_id)


def _rpc_error(err: RPCError) -> CancellationError:
    if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return CancellationError(
            ErrorCode.TEMPORAL_UNAVAILABLE, f"Temporal does not answer: {err.message}"
        )
    return CancellationError(ErrorCode.TEMPORAL_UNAVAILABLE, f"Temporal refused: {err.message}")
