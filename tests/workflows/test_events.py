"""Events of timed transitions (the reminder), on the time-skipping test server."""

from datetime import timedelta

import pytest

from activities.events import EventStore
from domain.cancellation import CancellationStatus
from domain.requests import AcceptRequest, StartRequest
from tests.webhook_receiver import running_receiver, running_relay

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")


async def test_an_overdue_decision_sends_the_reminder_event_once(ts, database_url):
    """Rule 4's reminder reaches the shop's systems as ``cancellation.reminder``."""
    await ts.settings(request_reminder_after=timedelta(hours=2))
    with running_receiver() as receiver:
        _, secret = await EventStore(ts.pool).put_endpoint(
            ts.shop_id, "erp", receiver.url("erp"), ["cancellation.*"]
        )
        assert secret is not None
        receiver.secrets["erp"] = secret
        async with running_relay(database_url):
            order_id = await ts.order()
            view, _ = await ts.client.start_cancellation(ts.shop_id, order_id, CUSTOMER)
            await ts.env.sleep(timedelta(hours=2, minutes=5))
            await ts.wait_for(view.cancellation_id, lambda v: v.needs_attention is not None)
            await ts.env.sleep(timedelta(days=1))
            await ts.client.accept(ts.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
            got = await receiver.wait_for("erp", lambda r: len(r) >= 5)
            # Let the run settle: an activity left behind would hold the server's clock.
            await ts.wait_status(view.cancellation_id, CancellationStatus.CANCELED)

    assert [(r.sequence, r.type) for r in got[:3]] == [
        (1, "cancellation.requested"),
        (2, "cancellation.reminder"),
        (3, "cancellation.accepted"),
    ]
    assert [r.type for r in got].count("cancellation.reminder") == 1
    reminder = got[1].body["data"]
    assert reminder["cancellation"]["needs_attention"] == "decision_overdue"
    assert reminder["notify_customer"] is False
