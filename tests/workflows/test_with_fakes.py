"""The workflow alone: fake activities registered under the real names, on the time-skipping
server, no database and no provider. What these tests prove is orchestration: the order of
the steps, the refusal of a failed refund, and what the run waits for."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.provider import (
    ProviderOperation,
    RefundPaymentInput,
    RefundPaymentResult,
)
from activities.store import ApplyChangesInput, OpenCancellationInput, OpenCancellationResult
from domain.cancellation import (
    Attention,
    CancellationStatus,
    CancellationView,
    RefundStatus,
    StartCancellationInput,
)
from domain.changes import ChangeResult
from domain.contract import cancellation_workflow_id
from domain.errors import FailureType
from domain.order import Order, OrderItem, OrderStatus, Tender, TenderKind
from domain.shop import ShopSettings
from tests.conftest import sold_out_start
from worker import WORKFLOW_RUNNER
from workflows.order_cancellation import OrderCancellationWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


class FakeStore:
    """The store as the workflow sees it: opens hold the order, change sets are recorded."""

    def __init__(self, order: Order) -> None:
        self.order = order
        self.events: list[str] = []

    @activity.defn(name="open_cancellation")
    async def open_cancellation(self, input: OpenCancellationInput) -> OpenCancellationResult:
        self.events.append("requested")
        return OpenCancellationResult(
            order=self.order,
            # A short undo window: the shared test server can't always skip time (other
            # tests' runs may hold it), and the run should close within the test.
            settings=ShopSettings(undo_window=timedelta(seconds=1)),
            refunded_by_tender={},
            created_at=input.at,
        )

    @activity.defn(name="apply_changes")
    async def apply_changes(self, input: ApplyChangesInput) -> ChangeResult:
        self.events.append(input.changes.event.event)
        status = input.changes.order.status if input.changes.order else None
        return ChangeResult(
            applied_at=input.changes.event.at,
            already_applied=False,
            order_status=status or OrderStatus.CANCELLATION_IN_PROGRESS,
        )


class FakeProvider:
    """A provider that refunds at once, or declines every refund."""

    def __init__(self, *, decline: bool) -> None:
        self.decline = decline
        self.refunds: list[str] = []

    @activity.defn(name="refund_payment")
    async def refund_payment(self, input: RefundPaymentInput) -> RefundPaymentResult:
        self.refunds.append(input.idempotency_key)
        if self.decline:
            raise ApplicationError("declined", type=FailureType.REFUND_DECLINED, non_retryable=True)
        return RefundPaymentResult(
            operation=ProviderOperation.REFUND, provider_reference="re_fake", settled=True
        )


def _order() -> Order:
    return Order(
        shop_id="fake-shop",
        order_id=f"o-{uuid.uuid4().hex[:8]}",
        customer_id="cust-1",
        currency="KRW",
        status=OrderStatus.PAID,
        shipping_fee=0,
        items=[OrderItem(item_id="i1", sku="mug", quantity=1, unit_price=10000)],
        tenders=[Tender(tender_id="t1", kind=TenderKind.CARD, amount=10000, payment_id="pay_fake")],
    )


@asynccontextmanager
async def _running(
    env, store: FakeStore, provider: FakeProvider
) -> AsyncIterator[tuple[WorkflowHandle[Any, CancellationView], StartCancellationInput]]:
    """A merchant's sold-out cancellation of the store's order, run by a worker on the
    fakes while the block lasts: its handle and its start."""
    task_queue = f"fakes-{uuid.uuid4().hex}"
    cancellation_id = cancellation_workflow_id("fake-shop", store.order.order_id, 1)
    start = sold_out_start(cancellation_id, "fake-shop", store.order.order_id)
    worker = Worker(
        env.client,
        task_queue=task_queue,
        workflows=[OrderCancellationWorkflow],
        activities=[store.open_cancellation, store.apply_changes, provider.refund_payment],
        workflow_runner=WORKFLOW_RUNNER,
    )
    async with worker:
        handle = await env.client.start_workflow(
            OrderCancellationWorkflow.run, start, id=start.cancellation_id, task_queue=task_queue
        )
        yield handle, start


async def test_a_merchant_cancellation_runs_its_steps_in_order(time_skipping_env):
    """Open, accept, refund once, canceled; then the run waits out the undo window."""
    store, provider = FakeStore(_order()), FakeProvider(decline=False)
    async with _running(time_skipping_env, store, provider) as (handle, start):
        view = await handle.result()
    assert view.status is CancellationStatus.CANCELED and view.closed
    assert store.events == ["requested", "accepted", "canceled"]
    assert provider.refunds == [f"{start.cancellation_id}-r1/try-1"]
    assert view.undo_until is not None and view.undo_until > datetime(2020, 1, 1, tzinfo=UTC)


async def test_a_declined_refund_fails_the_line_and_flags_the_run(time_skipping_env):
    """A decline is final: the line fails once (no retry), the run needs attention."""
    store, provider = FakeStore(_order()), FakeProvider(decline=True)
    async with _running(time_skipping_env, store, provider) as (handle, start):
        for _ in range(200):
            view = await handle.query(OrderCancellationWorkflow.status)
            if view.needs_attention is not None:
                break
            await time_skipping_env.sleep(1)
        await handle.terminate("test done")
    assert view.refunds[0].status is RefundStatus.FAILED
    assert view.needs_attention is Attention.REFUND_FAILED
    assert provider.refunds == [f"{start.cancellation_id}-r1/try-1"]
    assert store.events == ["requested", "accepted", "refund_failed"]
