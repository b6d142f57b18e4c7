"""Two identical actions queued before the first took effect are carried out once."""

import os
import uuid
from pathlib import Path

import pytest

from activities.provider import ProviderActivities
from activities.store import StoreActivities
from domain.cancellation import CancellationStatus, RetryRefundInput
from domain.requests import AcceptRequest, StartRequest
from starter.client import CancellationClient
from worker import build_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")


async def test_a_retry_queued_twice_in_one_task_is_performed_once(h):
    """Reliability review: two identical "retry as is" signals that reach the run in one
    workflow task (sent while no worker ran) used to retry twice, the second resetting the
    line while the first attempt was in flight: with a refund that succeeds, two refunds."""
    task_queue = f"repeats-{uuid.uuid4().hex}"
    client = CancellationClient(h.temporal, h.store, task_queue=task_queue)
    activities = [StoreActivities(h.store), ProviderActivities(h.provider)]

    order_id = await h.order(card_behavior={"refund": "decline"})
    async with _workers(h, activities, task_queue):
        view, _ = await client.start_cancellation(h.shop_id, order_id, CUSTOMER)
        await client.accept(h.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
        failed = await h.wait_for(
            view.cancellation_id, lambda v: v.refunds and v.refunds[0].status == "failed"
        )
    handle = h.handle(view.cancellation_id)
    retry = RetryRefundInput(refund_id=failed.refunds[0].refund_id, actor="merchant")
    await handle.signal("retry_refund", retry)  # no worker: both wait for the same task
    await handle.signal("retry_refund", retry)
    async with _workers(h, activities, task_queue):
        again = await h.wait_for(
            view.cancellation_id,
            lambda v: v.refunds[0].status == "failed" and v.refunds[0].attempts >= 2,
        )
        events = await h.events(view.cancellation_id)
    assert again.refunds[0].attempts == 2
    assert events.count("refund_retried") == 1
    assert again.status is CancellationStatus.IN_PROGRESS
    if folder := os.environ.get("RECORD_HISTORIES"):  # for the replay suite (own queue)
        history = await handle.fetch_history()
        target = Path(__file__).parent / "histories" / folder
        (target / "test_a_retry_queued_twice_in_one_task_is_performed_once--1.json").write_text(
            history.to_json()
        )


class _workers:
    """The harness's worker set on ``task_queue``, started and stopped around a block."""

    def __init__(self, h, activities, task_queue: str) -> None:
        self._workers = build_workers(h.temporal, activities, task_queue=task_queue)

    async def __aenter__(self) -> None:
        for worker in self._workers:
            await worker.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        for worker in reversed(self._workers):
            await worker.__aexit__(None, None, None)
