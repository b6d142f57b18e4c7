"""Bulk cancellation over HTTP: the job, its outcomes, the dry run, keys, scoping, stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.http.conftest import Shop

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MUG_ONLY = [{"item_id": "i1", "sku": "sku-mug", "quantity": 1, "unit_price": 10000}]


async def _wait_job(shop: Shop, bulk_id: str, within: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        answer = await shop.http.get(f"{shop.base}/bulk-cancellations/{bulk_id}")
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        if job["status"] != "running":
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)


async def test_a_job_answers_202_at_once_and_lists_every_outcome(shop: Shop) -> None:
    """``202`` with the job; the items route pages through each order's outcome, and the
    cancellations started are ordinary ones, readable by id."""
    partial = await shop.put_order()  # two mugs and a tee
    whole = await shop.put_order(items=MUG_ONLY)
    shipped = await shop.put_order(items=MUG_ONLY, status="in_transit")
    await shop.put_order(
        items=[{"item_id": "i1", "sku": "sku-tee", "quantity": 1, "unit_price": 1}]
    )

    answer = await shop.http.post(
        f"{shop.base}/bulk-cancellations", json={"sku": "sku-mug", "reason": "sold out"}
    )

    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] in ("running", "completed")
    assert set(job["counts"]) == {"matched", "started", "already_open", "refused"}
    job = await _wait_job(shop, job["bulk_id"])
    assert job["status"] == "completed"
    assert job["counts"] == {"matched": 3, "started": 2, "already_open": 0, "refused": 1}
    items: dict[str, Any] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await shop.http.get(
            f"{shop.base}/bulk-cancellations/{job['bulk_id']}/items", params=params
        )
        assert page.status_code == 200, page.text
        items |= {item["order_id"]: item for item in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert set(items) == {partial, whole, shipped}
    assert items[shipped]["outcome"] == "refused"
    assert items[shipped]["error"]["code"] == "order_shipped"
    assert items[partial]["items"] == [{"item_id": "i1", "quantity": 2}]
    assert items[whole]["items"] is None
    for order_id in (partial, whole):
        assert items[order_id]["outcome"] == "started"
        view = await shop.http.get(
            f"{shop.base}/cancellations/{items[order_id]['cancellation_id']}"
        )
        assert view.status_code == 200, view.text
        assert view.json()["order_id"] == order_id
        assert view.json()["reason_code"] == "sold_out"
        assert view.json()["initiated_by"] == "merchant"


async def test_the_same_idempotency_key_never_starts_a_second_job(shop: Shop) -> None:
    """A repeat answers the first answer; the key names the job itself, too."""
    order_id = await shop.put_order(items=MUG_ONLY)
    headers = {"Idempotency-Key": "bulk-key-1"}
    body = {"sku": "sku-mug"}
    first = await shop.http.post(f"{shop.base}/bulk-cancellations", json=body, headers=headers)
    again = await shop.http.post(f"{shop.base}/bulk-cancellations", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["bulk_id"] == first.json()["bulk_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    await _wait_job(shop, first.json()["bulk_id"])
    listed = await shop.http.get(shop.order_path(order_id, "/cancellations"))
    assert len(listed.json()["items"]) == 1
    other_body = await shop.http.post(
        f"{shop.base}/bulk-cancellations", json={"sku": "sku-tee"}, headers=headers
    )
    assert other_body.status_code == 422
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"


async def test_dry_run_answers_the_plan_and_starts_nothing(shop: Shop) -> None:
    """Orders, items and amounts per tender, with no job and no cancellation."""
    order_id = await shop.put_order()
    answer = await shop.http.post(
        f"{shop.base}/bulk-cancellations", json={"sku": "sku-mug", "dry_run": True}
    )
    assert answer.status_code == 200, answer.text
    dry = answer.json()
    assert dry["dry_run"] is True
    assert dry["counts"] == {"matched": 1, "started": 1, "already_open": 0, "refused": 0}
    (order,) = dry["orders"]
    assert order["order_id"] == order_id and order["outcome"] == "started"
    assert order["refundable"] == 20000
    assert [(line["tender_kind"], line["amount"]) for line in order["lines"]] == [("card", 20000)]
    view = await shop.http.get(shop.cancellation_path(order_id))
    assert view.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"sku": "sku-mug", "dry_run": True, "refund_method": "bank_deposit"}, id="bank"
        ),
        pytest.param({"sku": "sku-mug", "refund_method": "bank_deposit"}, id="bank-real"),
        pytest.param({"sku": "bad sku"}, id="sku-pattern"),
        pytest.param({"sku": "sku-mug", "restock": "yes"}, id="not-bool"),
        pytest.param({"sku": "sku-mug", "items": []}, id="extra-field"),
        pytest.param({"reason": "no sku"}, id="no-sku"),
    ],
)
async def test_bad_input_is_a_validation_error_and_starts_nothing(
    shop: Shop, body: dict[str, Any]
) -> None:
    order_id = await shop.put_order(items=MUG_ONLY)
    answer = await shop.http.post(f"{shop.base}/bulk-cancellations", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert (await shop.http.get(shop.cancellation_path(order_id))).status_code == 404


async def test_jobs_are_scoped_to_their_shop(shop: Shop, other_shop: Shop) -> None:
    """Another shop's token is refused; a job of another shop is not found."""
    answer = await shop.http.post(f"{shop.base}/bulk-cancellations", json={"sku": "sku-x"})
    bulk_id = answer.json()["bulk_id"]
    for method, suffix in (("GET", ""), ("GET", "/items"), ("POST", "/stop")):
        path = f"/bulk-cancellations/{bulk_id}{suffix}"
        foreign = await other_shop.http.request(method, f"{shop.base}{path}")
        assert foreign.status_code == 403, foreign.text
        missing = await other_shop.http.request(method, f"{other_shop.base}{path}")
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["code"] == "bulk_cancellation_not_found"
    start = await other_shop.http.post(f"{shop.base}/bulk-cancellations", json={"sku": "sku-x"})
    assert start.status_code == 403


async def test_stop_answers_the_job_and_a_bad_cursor_is_refused(shop: Shop) -> None:
    answer = await shop.http.post(f"{shop.base}/bulk-cancellations", json={"sku": "sku-none"})
    bulk_id = answer.json()["bulk_id"]
    stopped = await shop.http.post(f"{shop.base}/bulk-cancellations/{bulk_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["bulk_id"] == bulk_id
    job = await _wait_job(shop, bulk_id)
    assert job["status"] in ("completed", "stopped")
    bad = await shop.http.get(
        f"{shop.base}/bulk-cancellations/{bulk_id}/items", params={"cursor": "%%%"}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"
