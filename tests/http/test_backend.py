"""Backend services' routes: orders, fulfillment, settings, stock and balances."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ORDER = {
    "customer_id": "cust-9",
    "currency": "KRW",
    "status": "paid",
    "shipping_fee": 3000,
    "items": [{"item_id": "i1", "sku": "sku-mug", "quantity": 2, "unit_price": 10000}],
    "tenders": [
        {"tender_id": "t1", "kind": "points", "amount": 3000},
        {"tender_id": "t2", "kind": "bank_transfer", "amount": 20000},
    ],
}


async def test_an_order_is_created_read_and_replaced(shop):
    path = shop.order_path("ord-1")
    created = await shop.http.put(path, json=ORDER)
    assert created.status_code == 201, created.text
    assert created.json()["shop_id"] == shop.shop_id
    assert created.json()["order_id"] == "ord-1"
    assert created.json()["tenders"][1]["payment_id"] is None

    read = await shop.http.get(path)
    assert read.status_code == 200
    assert read.json() == created.json()

    replaced = await shop.http.put(path, json=ORDER | {"status": "preparing"})
    assert replaced.status_code == 200
    assert replaced.json()["status"] == "preparing"


async def test_an_order_with_an_open_cancellation_cant_be_replaced(shop):
    order_id = await shop.put_order()
    await shop.request_cancellation(order_id)
    answer = await shop.http.put(shop.order_path(order_id), json=ORDER)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "order_locked"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tenders": [{"tender_id": "t1", "kind": "points", "amount": 1}]}, "add up"),
        ({"status": "canceled"}, "status"),
        ({"currency": "krw"}, "currency"),
        ({"items": []}, "items"),
        ({"tenders": [{"tender_id": "t1", "kind": "card", "amount": 23000}]}, "payment_id"),
        ({"shipping_fee": -1}, "shipping_fee"),
        ({"shipping_fee": "3000"}, "shipping_fee"),
        ({"surprise": 1}, "surprise"),
    ],
    ids=[
        "tenders-dont-add-up",
        "cancellation-status",
        "currency",
        "no-items",
        "card-no-payment",
        "negative-fee",
        "fee-as-string",
        "unknown-field",
    ],
)
async def test_an_invalid_order_is_refused_and_not_stored(shop, change, field):
    answer = await shop.http.put(shop.order_path("bad"), json=ORDER | change)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert field in answer.json()["error"]["message"]
    assert (await shop.http.get(shop.order_path("bad"))).status_code == 404


async def test_fulfillment_progress_updates_the_order(shop):
    order_id = await shop.put_order()
    answer = await shop.http.post(
        shop.order_path(order_id, "/fulfillment"), json={"status": "ready_to_ship"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ready_to_ship"
    refused = await shop.http.post(
        shop.order_path(order_id, "/fulfillment"), json={"status": "canceled"}
    )
    assert refused.status_code == 422


async def _put_settings(shop, values: dict[str, Any]) -> dict[str, Any]:
    """PUT the shop's settings: `200`, and the answer it returns (a GET reads the same)."""
    put = await shop.http.put(f"{shop.base}/settings", json=values)
    assert put.status_code == 200, put.text
    assert (await shop.http.get(f"{shop.base}/settings")).json() == put.json()
    return dict(put.json())


async def test_settings_use_iso_8601_durations_both_ways(shop):
    """Durations come back normalized (24 hours is ``P1D``)."""
    defaults = await shop.http.get(f"{shop.base}/settings")
    assert defaults.json() == {
        "customer_cancellation_requests": True,
        "request_reminder_after": "P1D",
        "undo_window": "P30D",
        "repayment_window": "P7D",
    }
    new = {
        "customer_cancellation_requests": False,
        "request_reminder_after": "PT2H30M",
        "undo_window": "P14D",
        "repayment_window": "P3D",
    }
    assert await _put_settings(shop, new) == new


async def test_settings_take_any_duration_from_a_second_and_no_undo_at_all(shop):
    """Tests and demos use seconds; ``undo_window`` ``PT0S`` means no undo."""
    seconds = {
        "customer_cancellation_requests": True,
        "request_reminder_after": "PT1S",
        "undo_window": "PT0S",
        "repayment_window": "PT1S",
    }
    assert await _put_settings(shop, seconds) == seconds
    ten_years = {"request_reminder_after": "P3650D", "undo_window": "P10Y"}
    assert (await _put_settings(shop, ten_years))["undo_window"] == "P3650D"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_reminder_after", "PT0S"),
        ("repayment_window", "PT0S"),
        ("undo_window", "-PT1S"),
        ("undo_window", "PT0.5S"),
        ("request_reminder_after", "P3651D"),
        ("undo_window", "P11Y"),
        ("repayment_window", "P99999999D"),
    ],
)
async def test_settings_refuse_durations_out_of_bounds(shop, field, value):
    """At most ten years keeps every timer and deadline in range; no waits of zero but the
    undo window."""
    answer = await shop.http.put(f"{shop.base}/settings", json={field: value})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert field in answer.json()["error"]["message"]


async def test_stock_is_set_and_read_and_unknown_skus_have_none(shop):
    assert (await shop.http.get(f"{shop.base}/stock/sku-new")).json() == {"available": 0}
    put = await shop.http.put(f"{shop.base}/stock/sku-new", json={"available": 12})
    assert put.status_code == 200
    assert (await shop.http.get(f"{shop.base}/stock/sku-new")).json() == {"available": 12}
    for bad in [{"available": -1}, {"available": 2**31}, {"available": 1.5}, {}]:
        answer = await shop.http.put(f"{shop.base}/stock/sku-new", json=bad)
        assert answer.status_code == 422, bad
    assert (await shop.http.get(f"{shop.base}/stock/sku-new")).json() == {"available": 12}


async def test_customer_balances_are_set_and_read(shop):
    assert (await shop.http.get(f"{shop.base}/customers/nobody")).json() == {
        "points": 0,
        "credits": 0,
    }
    put = await shop.http.put(f"{shop.base}/customers/c-1", json={"points": 120, "credits": 30})
    assert put.status_code == 200
    assert (await shop.http.get(f"{shop.base}/customers/c-1")).json() == {
        "points": 120,
        "credits": 30,
    }
    huge = await shop.http.put(f"{shop.base}/customers/c-1", json={"points": 10**16})
    assert huge.status_code == 422
