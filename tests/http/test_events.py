"""Events out, end to end: cancellations driven through the admin hook, a relay, and a real
receiver on loopback that verifies every signature with the ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from starter.relay import Relay
from tests.webhook_receiver import (
    DROP,
    Receiver,
    events_of,
    fast_config,
    running_receiver,
    running_relay,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACCEPT = {"reason_code": "changed_mind", "reason": "customer asked", "refund_method": "original"}
BANK = {"bank": "KB", "account_number": "110-123-456789", "holder": "Ana"}
RETRY_SCALE = 0.00005
"""The day-long schedule in about five seconds: 0.25 ms, 15 ms, 90 ms, 0.36 s, 0.9 s,
1.8 s, 1.8 s."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as value:
        yield value


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def relay(database_url: str) -> AsyncIterator[Relay]:
    async with running_relay(database_url, fast_config(retry_scale=RETRY_SCALE)) as value:
        yield value


async def subscribe(shop: Any, receiver: Receiver, name: str, **body: Any) -> dict[str, Any]:
    """Register the receiver's ``name`` path as the shop's endpoint ``name``."""
    answer = await shop.http.put(
        f"{shop.base}/webhooks/{name}", json={"url": receiver.url(name)} | body
    )
    assert answer.status_code == 201, answer.text
    endpoint: dict[str, Any] = answer.json()
    receiver.secrets[name] = endpoint["secret"]
    return endpoint


async def card_order(shop: Any, **behavior: Any) -> str:
    payment = await shop.card_payment(30000, **behavior)
    return str(
        await shop.put_order(
            tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
        )
    )


async def post(shop: Any, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = await shop.http.post(path, json=body or {})
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, Any] = answer.json()
    return result


# ---------------------------------------------------------------------- the seed's flows


async def _accepted_and_refunded(shop: Any) -> str:
    order_id = await card_order(shop)
    view = await shop.request_cancellation(order_id)
    await post(shop, shop.cancellation_path(order_id, "/accept"), ACCEPT | {"customer_note": "hi"})
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    return str(view["cancellation_id"])


async def _rejected(shop: Any) -> str:
    order_id = await card_order(shop)
    view = await shop.request_cancellation(order_id)
    body = {"reason": "already packed", "customer_note": "sorry, it is on its way"}
    await post(shop, shop.cancellation_path(order_id, "/reject"), body)
    return str(view["cancellation_id"])


async def _withdrawn(shop: Any) -> str:
    order_id = await card_order(shop)
    view = await shop.request_cancellation(order_id)
    await post(shop, shop.cancellation_path(order_id, "/withdraw"))
    return str(view["cancellation_id"])


async def _refund_failed(shop: Any) -> str:
    order_id = await card_order(shop, refund="decline")
    start = {"initiated_by": "merchant", "channel": "admin", "reason_code": "sold_out"}
    view = await post(
        shop,
        shop.cancellation_path(order_id),
        start | {"accept": ACCEPT | {"reason_code": "sold_out"}},
    )
    await shop.wait_for(order_id, lambda v: v["needs_attention"] == "refund_failed")
    return str(view["cancellation_id"])


async def _bank_deposit_undone_after_repayment(shop: Any) -> str:
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "bank_transfer", "amount": 30000}]
    )
    start = {"initiated_by": "merchant", "channel": "admin", "reason_code": "sold_out"}
    accept = ACCEPT | {"reason_code": "sold_out", "bank_account": BANK}
    view = await post(shop, shop.cancellation_path(order_id), start | {"accept": accept})
    refund_id = view["refunds"][0]["refund_id"]
    await post(
        shop, shop.cancellation_path(order_id, f"/refunds/{refund_id}/confirm"), {"reference": "TX"}
    )
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    await post(shop, shop.cancellation_path(order_id, "/undo"), {"reason": "found stock"})
    await post(
        shop, shop.cancellation_path(order_id, "/repayment"), {"reference": "DEP", "amount": 30000}
    )
    return str(view["cancellation_id"])


EXPECTED = {
    _accepted_and_refunded: [
        "cancellation.requested",
        "cancellation.accepted",
        "cancellation.refund_succeeded",
        "cancellation.completed",
    ],
    _rejected: ["cancellation.requested", "cancellation.rejected", "cancellation.closed"],
    _withdrawn: ["cancellation.requested", "cancellation.withdrawn", "cancellation.closed"],
    _refund_failed: [
        "cancellation.requested",
        "cancellation.accepted",
        "cancellation.refund_failed",
    ],
    _bank_deposit_undone_after_repayment: [
        "cancellation.requested",
        "cancellation.accepted",
        "cancellation.refund_succeeded",
        "cancellation.completed",
        "cancellation.repayment_due",
        "cancellation.undone",
        "cancellation.closed",
    ],
}


async def test_every_event_of_the_seed_flows_arrives_once_verified_and_in_order(
    shop, receiver, relay
):
    """Each flow's events arrive once, signed, numbered 1, 2, 3 … in the order they happened."""
    await subscribe(shop, receiver, "seed")
    flows = list(EXPECTED)
    ids = await asyncio.gather(*(flow(shop) for flow in flows))
    expected = {cid: EXPECTED[flow] for cid, flow in zip(ids, flows, strict=True)}
    total = sum(len(types) for types in expected.values())

    got = await receiver.wait_for("seed", lambda r: len(r) >= total)
    await asyncio.sleep(0.5)  # nothing more comes
    got = receiver.of("seed")
    assert len(got) == total
    assert len({r.webhook_id for r in got}) == total, "each event arrives once"
    assert receiver.unverified == []
    by_cancellation = events_of(got)
    for cid, types in expected.items():
        assert by_cancellation[cid] == list(enumerate(types, start=1)), cid

    accepted = next(
        r for r in got if r.type == "cancellation.accepted" and r.cancellation_id == ids[0]
    )
    assert accepted.body["data"]["notify_customer"] is True
    assert accepted.body["data"]["customer_note"] == "hi"
    assert accepted.body["data"]["cancellation"]["status"] == "in_progress"
    rejected = next(r for r in got if r.type == "cancellation.rejected")
    assert rejected.body["data"]["customer_note"] == "sorry, it is on its way"
    closed = [r for r in got if r.type == "cancellation.closed"]
    assert all(r.body["data"]["cancellation"]["closed"] is True for r in closed)
    # Bank accounts appear masked, never in full.
    assert all("110-123-456789" not in str(r.body) for r in got)
    assert any("**********6789" in str(r.body) for r in got)


async def test_a_canceled_run_announces_closed_when_its_undo_window_ends(
    shop, receiver, relay, pool: asyncpg.Pool
):
    """The run closes by a timer with no store write; the relay announces it all the same."""
    await subscribe(shop, receiver, "closing")
    cid = await _accepted_and_refunded(shop)
    await receiver.wait_for("closing", lambda r: len(r) == 4)
    closes_at = await pool.fetchval(
        "SELECT closes_at FROM event_streams WHERE cancellation_id=$1", cid
    )
    order_id = await pool.fetchval(
        "SELECT order_id FROM cancellations WHERE cancellation_id=$1", cid
    )
    view = await shop.view(order_id)
    assert closes_at.isoformat() == view["undo_until"].replace("Z", "+00:00")

    # The undo window runs out (here: the store's clock says it did).
    await pool.execute(
        "UPDATE cancellations SET undo_until = now() - interval '1 minute',"
        " view = jsonb_set(view, '{undo_until}', to_jsonb(now() - interval '1 minute'))"
        " WHERE cancellation_id=$1",
        cid,
    )
    await pool.execute(
        "UPDATE event_streams SET closes_at = now() - interval '1 minute' WHERE cancellation_id=$1",
        cid,
    )
    got = await receiver.wait_for("closing", lambda r: len(r) == 5)
    assert (got[-1].sequence, got[-1].type) == (5, "cancellation.closed")
    assert got[-1].body["data"]["cancellation"]["closed"] is True
    await asyncio.sleep(0.5)
    assert len(receiver.of("closing")) == 5, "closed is announced once"


# ---------------------------------------------------------------------- order and faults


async def test_order_per_cancellation_holds_under_concurrency_and_failures(shop, receiver, relay):
    """Many cancellations at once, a receiver that is slow and often fails: every event of a
    cancellation still arrives after the one before it, and cancellations go in parallel."""
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    rng = random.Random(15)

    def flaky(received: Any) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            fail = rng.random() < 0.3
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return 500 if fail else 204

    receiver.behavior["busy"] = flaky
    await subscribe(shop, receiver, "busy")
    ids = await asyncio.gather(*(_accepted_and_refunded(shop) for _ in range(6)))
    await receiver.wait_for("busy", lambda r: len(r) >= 6 * 4, within=30)

    by_cancellation = events_of(receiver.of("busy"))
    for cid in ids:
        assert [seq for seq, _ in by_cancellation[cid]] == [1, 2, 3, 4], by_cancellation[cid]
    failures = len(receiver.of("busy", accepted=False)) - len(receiver.of("busy"))
    assert failures > 0, "the receiver failed some attempts, which were retried"
    assert peak > 1, "deliveries of different cancellations overlap"


async def test_a_slow_receiver_is_retried_and_never_gets_events_out_of_order(shop, receiver, relay):
    """200 after the relay's timeout counts as not delivered: the same event comes again
    (same webhook-id) before the next one."""
    slow_once: set[str] = set()

    def slow_first_time(received: Any) -> int:
        if received.webhook_id not in slow_once:
            slow_once.add(received.webhook_id)
            time.sleep(1.5)  # the relay gives up after 1 s
        return 200

    receiver.behavior["slow"] = slow_first_time
    await subscribe(shop, receiver, "slow")
    await _rejected(shop)
    got = await receiver.wait_for(
        "slow", lambda r: len({x.webhook_id for x in r}) == 3 and len(r) >= 6
    )
    # Each event came twice (the late 200 and the retry), and the next one only after.
    sequences = [r.sequence for r in got]
    assert sequences == sorted(sequences)
    assert [r.webhook_id for r in got[0::2]] == [r.webhook_id for r in got[1::2]]


async def test_a_receiver_that_drops_the_connection_is_retried(shop, receiver, relay):
    """No answer at all (the connection closed): the same event again, then the next."""
    dropped: set[str] = set()

    def drop_first_time(received: Any) -> int:
        if received.webhook_id in dropped:
            return 200
        dropped.add(received.webhook_id)
        return DROP

    receiver.behavior["dropping"] = drop_first_time
    await subscribe(shop, receiver, "dropping")
    cid = await _withdrawn(shop)
    got = await receiver.wait_for("dropping", lambda r: len(r) == 3)
    assert events_of(got)[cid] == list(enumerate(EXPECTED[_withdrawn], start=1))
    attempts = receiver.of("dropping", accepted=False)
    assert [a.sequence for a in attempts] == [1, 1, 2, 2, 3, 3]


async def test_a_receiver_down_for_a_while_gets_everything_afterwards(shop, relay):
    """Connections refused for a while: the relay keeps retrying and catches up, in order."""
    with running_receiver() as down:
        await subscribe(shop, down, "down")
        down.stop()
        ids = await asyncio.gather(_withdrawn(shop), _rejected(shop))
        await asyncio.sleep(1.5)
        down.start()

        got = await down.wait_for("down", lambda r: len(r) == 6, within=15)
        by_cancellation = events_of(got)
        assert [t for _, t in by_cancellation[ids[0]]] == EXPECTED[_withdrawn]
        assert [t for _, t in by_cancellation[ids[1]]] == EXPECTED[_rejected]
        assert [s for s, _ in by_cancellation[ids[0]]] == [1, 2, 3]


async def test_no_shop_receives_another_shops_events(shop, other_shop, receiver, relay):
    await subscribe(shop, receiver, "shop-a")
    await subscribe(other_shop, receiver, "shop-b")
    await asyncio.gather(_withdrawn(shop), _withdrawn(other_shop), _rejected(other_shop))
    await receiver.wait_for("shop-a", lambda r: len(r) == 3)
    await receiver.wait_for("shop-b", lambda r: len(r) == 6)
    await asyncio.sleep(0.3)
    a = receiver.of("shop-a")
    b = receiver.of("shop-b")
    assert {r.body["data"]["cancellation"]["shop_id"] for r in a} == {shop.shop_id}
    assert {r.body["data"]["cancellation"]["shop_id"] for r in b} == {other_shop.shop_id}
    assert len(a) == 3 and len(b) == 6


async def test_an_endpoint_gets_only_the_event_types_it_asked_for(shop, receiver, relay, pool):
    await subscribe(shop, receiver, "picky", events=["cancellation.closed"])
    cid = await _withdrawn(shop)
    got = await receiver.wait_for("picky", lambda r: len(r) == 1)
    await asyncio.sleep(0.3)
    assert [r.type for r in receiver.of("picky")] == ["cancellation.closed"]
    assert got[0].sequence == 3, "sequences count every event, not only those sent"
    # Events no endpoint takes are not even stored.
    stored = await pool.fetch("SELECT type FROM webhook_events WHERE cancellation_id=$1", cid)
    assert [r["type"] for r in stored] == ["cancellation.closed"]


async def test_a_shop_without_endpoints_stores_no_events(shop, pool):
    cid = await _withdrawn(shop)
    assert (
        await pool.fetchval("SELECT count(*) FROM webhook_events WHERE cancellation_id=$1", cid)
        == 0
    )
    assert (
        await pool.fetchval("SELECT last_sequence FROM event_streams WHERE cancellation_id=$1", cid)
        == 3
    )


# ---------------------------------------------------------------------- failed, then redelivered


async def test_retries_follow_the_schedule_then_fail_and_a_redelivery_succeeds(
    shop, receiver, relay
):
    receiver.behavior["broken"] = lambda _: 500
    await subscribe(shop, receiver, "broken", events=["cancellation.requested"])
    order_id = await card_order(shop)
    await shop.request_cancellation(order_id)
    deliveries = f"{shop.base}/webhooks/broken/deliveries"

    deadline = time.monotonic() + 20
    while True:
        page = (await shop.http.get(deliveries, params={"status": "failed"})).json()
        if page["items"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    [failed] = page["items"]
    assert failed["attempts"] == 8
    assert failed["last_error"] == "HTTP 500"
    assert failed["next_attempt_at"] is None
    attempts = receiver.of("broken", accepted=False)
    assert len(attempts) == 8 and len({a.webhook_id for a in attempts}) == 1
    # Waits grow as the schedule says (scaled): at least 0.36 s, 0.9 s and 1.8 s at the end.
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert gaps[3] >= 0.36 * 0.9 and gaps[4] >= 0.9 * 0.9 and gaps[6] >= 1.8 * 0.9, gaps

    receiver.behavior.pop("broken")
    answer = await shop.http.post(f"{deliveries}/{failed['delivery_id']}/redeliver")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "pending"
    got = await receiver.wait_for("broken", lambda r: len(r) == 1)
    assert got[0].webhook_id == failed["event_id"]
    # The relay records the delivery just after the receiver answered.
    deadline = time.monotonic() + 10
    while True:
        answer = await shop.http.get(deliveries, params={"status": "delivered"})
        delivered = answer.json()["items"]
        if delivered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [d["delivery_id"] for d in delivered] == [failed["delivery_id"]]
    assert (await shop.http.get(deliveries, params={"status": "failed"})).json()["items"] == []
