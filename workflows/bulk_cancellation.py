"""The ``BulkCancellation`` workflow: one job cancelling every open order that holds a SKU.

``run()`` reads like the merchant's request: record the job, start the cancellations (an
activity reads the matching orders page by page with a keyset cursor over the store and
starts a bounded number at a time, writing each order's outcome as it happens), then
record how the job ended. It does not wait for the cancellations themselves: each is its
own ``OrderCancellation`` run with its own undo window. Each run starts one share of the
orders (500) and continues as new with the cursor and the counts, so its history stays
short however many orders match.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.bulk import BulkActivities
    from domain.bulk import (
        BulkCancellationInput,
        BulkJob,
        BulkStatus,
        FinishBulkInput,
        RegisterBulkInput,
        StartOrdersInput,
        StartOrdersResult,
    )

# Recording the job and its end are single short statements on the worker's own database.
STORE_TIMEOUT = timedelta(seconds=10)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
)
# One run's share of orders (500 by default) takes under a minute on a healthy worker; a
# share of thousands, each start waiting up to 30 s for its run to open when workers are
# slow, takes far longer. The heartbeat is what notices a dead worker.
ORDERS_TIMEOUT = timedelta(hours=2)
# The activity heartbeats every second: a worker that died mid-way is noticed in 10 s, and
# the retry picks up where the outcomes written so far end.
ORDERS_HEARTBEAT = timedelta(seconds=10)
# Temporal or the database away, or a run the job started not answering yet (its worker
# died): keep trying, at least every 10 s, so a job recovers soon after the outage ends. A
# retry re-reads only ids and skips the orders with an outcome; nothing repeats.
ORDERS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)


@workflow.defn(name="BulkCancellation")
class BulkCancellationWorkflow:
    """One bulk cancellation job (``domain.bulk`` has the outcomes and their rules)."""

    @workflow.init
    def __init__(self, input: BulkCancellationInput) -> None:
        self._state = input.model_copy(deep=True)
        self._status = BulkStatus.RUNNING
        self._finished_at: datetime | None = None

    # ------------------------------------------------------------------ the process

    @workflow.run
    async def run(self, input: BulkCancellationInput) -> BulkJob:
        """Record the job → start every matching order's cancellation → record the end."""
        if self._state.created_at is None:
            await self._register()
        if not self._state.stop_requested:
            started = await self._start_next_orders()
            self._state.stop_requested |= started.stopped
            if started.more and not self._state.stop_requested:
                # Each run starts one share of the orders: its history stays short.
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._state.runs += 1
                workflow.continue_as_new(self._state)
        await self._finish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._job()

    async def _register(self) -> None:
        """Record the job in the store; the ``registered`` update answers after this."""
        now = workflow.now()
        await workflow.execute_local_activity_method(
            BulkActivities.register_bulk_job,
            RegisterBulkInput(
                parameters=self._state.parameters,
                workflow_id=workflow.info().workflow_id,
                at=now,
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary="Record the job",
        )
        self._state.created_at = now
        self._describe()

    async def _start_next_orders(self) -> StartOrdersResult:
        """Start this run's share of the orders; the counts come back from the store."""
        p = self._state.parameters
        after = self._state.cursor
        started: StartOrdersResult = await workflow.execute_activity_method(
            BulkActivities.start_bulk_orders,
            StartOrdersInput(parameters=p, after=after, limit=p.orders_per_run),
            start_to_close_timeout=ORDERS_TIMEOUT,
            heartbeat_timeout=ORDERS_HEARTBEAT,
            retry_policy=ORDERS_RETRY,
            summary=f"Start up to {p.orders_per_run} orders after {after or 'the first'}",
        )
        self._state.cursor = started.last_order_id
        self._state.counts = started.counts
        self._describe()
        return started

    async def _finish(self) -> None:
        """Record that every matched order has an outcome, or that the job was stopped."""
        status = BulkStatus.STOPPED if self._state.stop_requested else BulkStatus.COMPLETED
        now = workflow.now()
        await workflow.execute_local_activity_method(
            BulkActivities.finish_bulk_job,
            FinishBulkInput(
                shop_id=self._state.parameters.shop_id,
                bulk_id=self._state.parameters.bulk_id,
                status=status,
                at=now,
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary=f"Record the job {status.value}",
        )
        self._status = status
        self._finished_at = now
        self._describe()

    def _describe(self) -> None:
        """Say in plain words where the job is (the Web UI's current details)."""
        counts = self._state.counts
        done = (
            f"{counts.matched} orders matched: {counts.started} started,"
            f" {counts.already_open} already open, {counts.refused} refused."
        )
        match self._status:
            case BulkStatus.COMPLETED:
                text = f"Completed. {done}"
            case BulkStatus.STOPPED:
                text = f"Stopped by the merchant. {done}"
            case _ if self._state.stop_requested:
                text = f"Stopping: no further orders are started. {done}"
            case _:
                after = self._state.cursor
                where = f"after order {after}" if after else "from the first order"
                text = f"Starting cancellations {where} (run {self._state.runs}). {done}"
        workflow.set_current_details(text)

    def _job(self) -> BulkJob:
        p = self._state.parameters
        return BulkJob(
            bulk_id=p.bulk_id,
            shop_id=p.shop_id,
            workflow_id=workflow.info().workflow_id,
            sku=p.sku,
            status=self._status,
            counts=self._state.counts,
            reason_code=p.reason_code,
            refund_method=p.refund_method,
            restock=p.restock,
            notify_customer=p.notify_customer,
            stop_requested=self._state.stop_requested,
            created_at=self._state.created_at,
            finished_at=self._finished_at,
        )

    # ------------------------------------------------------------------ messages

    @workflow.query
    def progress(self) -> BulkJob:
        """The job as the workflow knows it: counts as of the last run's share (the store,
        which ``GET …/bulk-cancellations/{bulk_id}`` reads, has every outcome as it
        happens)."""
        return self._job()

    @workflow.update(name="registered")
    async def registered(self) -> BulkJob:
        """Answers once the job is recorded in the store (the starter's 202)."""
        await workflow.wait_condition(lambda: self._state.created_at is not None)
        return self._job()

    @workflow.signal(name="stop")
    def stop(self) -> None:
        """Start no further orders; the cancellations started go on."""
        self._state.stop_requested = True
        self._describe()
