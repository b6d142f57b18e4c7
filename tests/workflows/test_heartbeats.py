"""Provider activities heartbeat while a call is slow, so a dead worker is noticed in 5 s."""

import asyncio

import httpx
import pytest

from domain.cancellation import CancellationStatus
from domain.requests import AcceptRequest, StartRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")


async def test_a_hanging_provider_call_heartbeats_and_still_pays_once(h, provider_url):
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    async with httpx.AsyncClient(base_url=provider_url) as sandbox:
        # Every POST hangs 3 s, then answers 503 (before any effect).
        await sandbox.put("/v1/faults", json={"hang_rate": 1.0, "hang_seconds": 3.0})
        try:
            await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
            handle = h.handle(view.cancellation_id)
            for _ in range(50):
                pending = (await handle.describe()).raw_description.pending_activities
                if pending and pending[0].HasField("last_heartbeat_time"):
                    break
                await asyncio.sleep(0.1)
            assert pending and pending[0].activity_type.name == "refund_payment"
            assert pending[0].HasField("last_heartbeat_time")
        finally:
            await sandbox.put("/v1/faults", json={})

    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in (await h.handle(view.cancellation_id).fetch_history()).events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert [a.heartbeat_timeout.ToTimedelta().total_seconds() for a in scheduled] == [5.0]
    refunds = await h.refunds_in_ledger(order_id)
    assert [(e["type"], e["amount"]) for e in refunds] == [("refund", 30000)]
