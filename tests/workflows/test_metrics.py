"""The worker's Prometheus metrics, served on loopback when WORKER_METRICS_PORT is set."""

import httpx
import pytest
from temporalio.client import Client

from domain.cancellation import CancellationStatus
from domain.requests import AcceptRequest, StartRequest
from tools import ports
from worker import metrics_runtime

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_worker_serves_prometheus_metrics(make_harness, dev_env):
    port = ports.free_port()
    runtime = metrics_runtime(port)
    assert runtime is not None and metrics_runtime(None) is None
    config = dev_env.client.config()
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=config["namespace"],
        data_converter=config["data_converter"],
        runtime=runtime,
    )
    h = await make_harness(dev_env, client)
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(
        h.shop_id,
        order_id,
        StartRequest(
            initiated_by="merchant", channel="admin", accept=AcceptRequest(reason_code="sold_out")
        ),
    )
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for name in (
        "temporal_activity_schedule_to_start_latency",
        "temporal_activity_execution_latency",
        "temporal_workflow_task_schedule_to_start_latency",
    ):
        assert name in text, name
    assert 'activity_type="refund_payment"' in text
