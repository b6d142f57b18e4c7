"""How a start answers: one update-with-start call, and what it does when the run's
worker is absent or predates the `opened` update."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio import workflow
from temporalio.worker import Worker

from domain.cancellation import CancellationStatus, CancellationView, StartCancellationInput
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus
from domain.requests import StartRequest
from starter.client import CancellationClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER_REQUEST = StartRequest(
    initiated_by="customer", channel="my_account", reason_code="changed_mind"
)


@workflow.defn(name="OrderCancellation", sandboxed=False)
class WorkflowBeforeTheOpenedUpdate:
    """Stands in for a worker deployed before the `opened` update existed: it opens at
    once and answers the `status` query, which is all the older start path relies on."""

    @workflow.init
    def __init__(self, start: StartCancellationInput) -> None:
        self._view = CancellationView(
            cancellation_id=start.cancellation_id,
            shop_id=start.shop_id,
            order_id=start.order_id,
            workflow_id=start.cancellation_id,
            status=CancellationStatus.REQUESTED,
            order_status=OrderStatus.CANCELLATION_REQUESTED,
            initiated_by=start.initiated_by,
            channel=start.channel,
            reason_code=start.reason_code,
            reason=start.reason,
        )
        self._done = False

    @workflow.run
    async def run(self, start: StartCancellationInput) -> CancellationView:
        await workflow.wait_condition(lambda: self._done)
        return self._view

    @workflow.query
    def status(self) -> CancellationView:
        return self._view

    @workflow.signal
    def finish(self) -> None:
        self._done = True


def _client_on(h: Any, task_queue: str, open_wait: float = 30.0) -> CancellationClient:
    return CancellationClient(h.temporal, h.store, task_queue=task_queue, open_wait=open_wait)


async def test_a_refusal_at_start_comes_back_from_the_same_call(h, monkeypatch):
    """The order ships after the client's own check and before the run opens: the run
    refuses, and the `opened` update brings that refusal back to the start's caller."""
    order_id = await h.order()
    read_context = h.store.order_context

    async def ships_meanwhile(shop_id: str, order_id: str) -> Any:
        context = await read_context(shop_id, order_id)
        await h.store.set_fulfillment_status(shop_id, order_id, OrderStatus.IN_TRANSIT)
        return context

    monkeypatch.setattr(h.store, "order_context", ships_meanwhile)
    with pytest.raises(CancellationError) as refused:
        await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
    assert refused.value.code is ErrorCode.ORDER_SHIPPED
    assert await h.order_status(order_id) is OrderStatus.IN_TRANSIT
    assert await h.store.cancellations_of_order(h.shop_id, order_id) == []
    run = h.temporal.get_workflow_handle(f"cancellation~{h.shop_id}~{order_id}~1")
    assert (await run.describe()).status.name == "FAILED"


async def test_without_a_worker_the_start_answers_with_the_run_not_yet_opened(h):
    """No worker serves the queue: after the wait the caller learns the run exists; it
    opens when a worker comes."""
    order_id = await h.order()
    client = _client_on(h, f"nobody-{uuid.uuid4().hex}", open_wait=1.0)
    view, created = await client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
    assert created
    assert view.status is CancellationStatus.REQUESTED and view.order_status is None
    description = await h.temporal.get_workflow_handle(view.cancellation_id).describe()
    assert description.status is not None and description.status.name == "RUNNING"
    await h.temporal.get_workflow_handle(view.cancellation_id).terminate("test over")


async def test_a_worker_before_the_opened_update_is_watched_open(h):
    """Rolling deploy: the run's worker rejects the unknown update; the start falls back
    to watching the run open through its `status` query."""
    order_id = await h.order()
    task_queue = f"old-{uuid.uuid4().hex}"
    client = _client_on(h, task_queue)
    async with Worker(h.temporal, task_queue=task_queue, workflows=[WorkflowBeforeTheOpenedUpdate]):
        view, created = await client.start_cancellation(h.shop_id, order_id, CUSTOMER_REQUEST)
        assert created
        assert view.order_status is OrderStatus.CANCELLATION_REQUESTED
        again, created_again = await client.start_cancellation(
            h.shop_id, order_id, CUSTOMER_REQUEST
        )
        handle = h.temporal.get_workflow_handle(view.cancellation_id)
        await handle.signal("finish")
        await handle.result()
    assert not created_again and again.cancellation_id == view.cancellation_id
