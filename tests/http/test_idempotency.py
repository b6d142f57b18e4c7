"""``Idempotency-Key``: repeats answer like the first request and act once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ACCEPT = {"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"}


async def _refunds_in_ledger(shop, payment_id: str) -> list[dict[str, Any]]:
    payment = await shop.payment(payment_id)
    return [e for e in payment["ledger"] if e["type"] == "refund"]


async def test_a_repeated_accept_answers_the_first_answer_and_refunds_once(shop, store):
    """Checked where it matters: the provider's ledger and the audit trail."""
    order_id = await shop.put_order()
    payment_id = (await shop.http.get(shop.order_path(order_id))).json()["tenders"][0]["payment_id"]
    await shop.request_cancellation(order_id)
    headers = {"Idempotency-Key": "accept-1"}
    path = shop.cancellation_path(order_id, "/accept")
    first = await shop.http.post(path, json=ACCEPT, headers=headers)
    assert first.status_code == 200, first.text
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")

    again = await shop.http.post(path, json=ACCEPT, headers=headers)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    assert [e["amount"] for e in await _refunds_in_ledger(shop, payment_id)] == [30000]
    events = [e["event"] for e in await store.events(first.json()["cancellation_id"])]
    assert events.count("accepted") == 1


async def test_the_same_key_with_another_body_is_refused(shop, store):
    order_id = await shop.put_order()
    requested = await shop.request_cancellation(order_id)
    path = shop.cancellation_path(order_id, "/reject")
    headers = {"Idempotency-Key": "decision-1"}
    first = await shop.http.post(path, json={"reason": "packed"}, headers=headers)
    assert first.status_code == 200
    other = await shop.http.post(path, json={"reason": "something else"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    elsewhere = await shop.http.post(
        shop.cancellation_path(order_id, "/accept"), json=ACCEPT, headers=headers
    )
    assert elsewhere.status_code == 422
    assert elsewhere.json()["error"]["code"] == "idempotency_key_reused"
    events = [e["event"] for e in await store.events(requested["cancellation_id"])]
    assert events.count("rejected") == 1


async def test_concurrent_requests_with_one_key_act_once(shop, store):
    """Insert-first: the second waits for the first request's answer and replays it."""
    order_id = await shop.put_order()
    payment_id = (await shop.http.get(shop.order_path(order_id))).json()["tenders"][0]["payment_id"]
    await shop.request_cancellation(order_id)
    path = shop.cancellation_path(order_id, "/accept")
    answers = await asyncio.gather(
        *(shop.http.post(path, json=ACCEPT, headers={"Idempotency-Key": "race"}) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json() == answers[0].json() for a in answers)
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 3
    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    assert len(await _refunds_in_ledger(shop, payment_id)) == 1
    events = [e["event"] for e in await store.events(final["cancellation_id"])]
    assert events.count("accepted") == 1


async def test_a_failed_request_leaves_its_key_free_for_the_retry(shop):
    order_id = await shop.put_order()
    headers = {"Idempotency-Key": "early-accept"}
    path = shop.cancellation_path(order_id, "/accept")
    too_early = await shop.http.post(path, json=ACCEPT, headers=headers)
    assert too_early.status_code == 404
    await shop.request_cancellation(order_id)
    retried = await shop.http.post(path, json=ACCEPT, headers=headers)
    assert retried.status_code == 200, retried.text
    assert "Idempotent-Replayed" not in retried.headers


async def test_a_repeated_start_answers_201_again_with_the_first_view(shop):
    order_id = await shop.put_order()
    body = {"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"}
    headers = {"Idempotency-Key": "start-1"}
    first = await shop.http.post(shop.cancellation_path(order_id), json=body, headers=headers)
    again = await shop.http.post(shop.cancellation_path(order_id), json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    without_key = await shop.http.post(shop.cancellation_path(order_id), json=body)
    assert without_key.status_code == 200


async def test_a_replayed_put_does_not_overwrite_a_later_change(shop):
    path = f"{shop.base}/stock/sku-mug"
    first = await shop.http.put(path, json={"available": 5}, headers={"Idempotency-Key": "s-1"})
    await shop.http.put(path, json={"available": 3})
    replay = await shop.http.put(path, json={"available": 5}, headers={"Idempotency-Key": "s-1"})
    assert replay.json() == first.json() == {"available": 5}
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (await shop.http.get(path)).json() == {"available": 3}


async def test_keys_belong_to_their_shop(shop, other_shop):
    """Two shops may use the same key for their own requests."""
    headers = {"Idempotency-Key": "shared-key"}
    mine = await shop.http.put(f"{shop.base}/stock/a", json={"available": 1}, headers=headers)
    theirs = await other_shop.http.put(
        f"{other_shop.base}/stock/b", json={"available": 2}, headers=headers
    )
    assert (mine.status_code, theirs.status_code) == (200, 200)
    assert theirs.json() == {"available": 2}


async def test_a_malformed_key_is_a_validation_error(shop):
    for key in ["", "with space", "k" * 256]:
        answer = await shop.http.put(
            f"{shop.base}/stock/a", json={"available": 1}, headers={"Idempotency-Key": key}
        )
        assert answer.status_code == 422, key
        assert "Idempotency-Key" in answer.json()["error"]["message"]


async def test_a_start_repeated_after_its_answer_was_lost_starts_nothing_new(shop, pool):
    """The hook died between starting a partial cancellation and recording its answer (or
    its lease ran out): the repeat finds the cancellation its key started, even though that
    one has finished, instead of cancelling the order's next items and refunding again."""
    order_id = await shop.put_order()
    payment_id = (await shop.http.get(shop.order_path(order_id))).json()["tenders"][0]["payment_id"]
    body = {
        "initiated_by": "merchant",
        "channel": "admin",
        "items": [{"item_id": "i1", "quantity": 1}],
        "accept": ACCEPT,
    }
    headers = {"Idempotency-Key": "start-partial-1"}
    first = await shop.http.post(shop.cancellation_path(order_id), json=body, headers=headers)
    assert first.status_code == 201, first.text
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    # What a crash leaves behind: the hook never recorded the answer.
    await pool.execute(
        "DELETE FROM idempotency_keys WHERE shop_id=$1 AND key=$2", shop.shop_id, "start-partial-1"
    )

    again = await shop.http.post(shop.cancellation_path(order_id), json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["cancellation_id"] == first.json()["cancellation_id"]
    assert len(await _refunds_in_ledger(shop, payment_id)) == 1
    listed = (await shop.http.get(shop.order_path(order_id, "/cancellations"))).json()
    assert len(listed["items"]) == 1

    other = await shop.put_order()
    elsewhere = await shop.http.post(shop.cancellation_path(other), json=body, headers=headers)
    assert elsewhere.status_code == 422
    assert elsewhere.json()["error"]["code"] == "idempotency_key_reused"
