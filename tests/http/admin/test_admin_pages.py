"""The list, Order details and settings pages over plain HTTP, checked against the API."""

from __future__ import annotations

import asyncio
import re

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ROW = re.compile(r'data-cancellation="([^"]+)"')
NEXT = re.compile(r'href="(/admin/cancellations\?[^"]*cursor=[^"]+)"')


async def test_list_is_newest_first_paginated_and_filtered_by_needs_attention(shop, merchant):
    """Three requests and one failed refund: pages of two, and the filter finds the failure."""
    requested = []
    for _ in range(3):
        order_id = await shop.put_order()
        requested.append((await shop.request_cancellation(order_id))["cancellation_id"])
    payment = await shop.card_payment(30000, refund="decline")
    failing = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    failed = await shop.request_cancellation(failing)
    accept = {"reason_code": "changed_mind", "refund_method": "original"}
    await shop.http.post(shop.cancellation_path(failing, "/accept"), json=accept)
    await shop.wait_for(failing, lambda v: v["needs_attention"] == "refund_failed")

    api = (await shop.http.get(f"{shop.base}/cancellations")).json()["items"]
    newest_first = [view["cancellation_id"] for view in api]
    first = await merchant.get("/admin/cancellations", limit="2")
    assert ROW.findall(first.text) == newest_first[:2]
    link = NEXT.search(first.text)
    assert link, first.text
    second = await merchant.get(link.group(1).replace("&amp;", "&"))
    assert ROW.findall(second.text) == newest_first[2:4]

    attention = await merchant.get("/admin/cancellations", attention="1")
    assert ROW.findall(attention.text) == [failed["cancellation_id"]]
    assert "A refund failed" in attention.text
    only_requested = await merchant.get("/admin/cancellations", status="requested")
    assert ROW.findall(only_requested.text) == list(reversed(requested))
    assert only_requested.text.count("Cancellation requested [Customer]") >= 3


async def test_settings_saved_on_the_page_are_the_shops_settings(shop, merchant):
    """Turning customer requests off on the page makes the API refuse a customer's request."""
    page = await merchant.get("/admin/settings")
    assert 'value="P1D"' in page.text and 'value="P30D"' in page.text
    saved = await merchant.post(
        "/admin/settings",
        {"request_reminder_after": "PT2H", "undo_window": "P14D", "repayment_window": "P3D"},
    )
    assert saved.status_code == 303
    settings = (await shop.http.get(f"{shop.base}/settings")).json()
    assert settings == {
        "customer_cancellation_requests": False,
        "request_reminder_after": "PT2H",
        "undo_window": "P14D",
        "repayment_window": "P3D",
    }
    order_id = await shop.put_order()
    refused = await shop.http.post(
        shop.cancellation_path(order_id),
        json={"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"},
    )
    assert refused.json()["error"]["code"] == "customer_requests_disabled"
    again = await merchant.get("/admin/settings", notice="settings")
    assert "The settings were saved." in again.text
    assert 'name="customer_cancellation_requests" value="1" checked' not in again.text


async def test_shipped_order_says_return_and_cancels_nothing(shop, merchant):
    """Order details of a shipped order explains the return; a forced post changes nothing."""
    order_id = await shop.put_order(status="in_transit")
    page = await merchant.get(f"/admin/orders/{order_id}")
    assert "This order has shipped: process it as a return." in page.text
    assert 'id="cancel"' not in page.text
    forced = await merchant.post(
        f"/admin/orders/{order_id}/cancel",
        {"reason_code": "sold_out", "scope": "whole", "step": "confirm"},
    )
    assert forced.status_code == 409
    assert "This order has shipped: process it as a return." in forced.text
    missing = await shop.http.get(shop.cancellation_path(order_id))
    assert missing.json()["error"]["code"] == "cancellation_not_found"


async def test_a_form_sent_twice_acts_once(shop, merchant):
    """The reject form's key is the update id: the repeat answers like the first, one event."""
    order_id = await shop.put_order()
    view = await shop.request_cancellation(order_id)
    page_url = f"/admin/cancellations/{view['cancellation_id']}"
    page = await merchant.get(page_url)
    form = re.search(r'action="[^"]*/reject">(.*?)</form>', page.text, re.DOTALL)
    assert form, page.text
    key = re.search(r'name="key" value="([^"]+)"', form.group(1))
    assert key
    sent = [
        await merchant.post(f"{page_url}/reject", {"reason": "sold out", "key": key.group(1)})
        for _ in range(2)
    ]
    assert [answer.status_code for answer in sent] == [303, 303]
    events = [entry["event"] for entry in (await shop.view(order_id))["history"]]
    assert events.count("rejected") == 1
    keys = re.findall(r'name="key" value="([^"]+)"', (await merchant.get(page_url)).text)
    assert len(keys) == len(set(keys)), "two forms of one page never share a key"


async def test_accept_and_undo_forms_of_a_decided_cancellation_lead_back_to_it(shop, merchant):
    order_id = await shop.put_order()
    view = await shop.request_cancellation(order_id)
    page_url = f"/admin/cancellations/{view['cancellation_id']}"
    undo = await merchant.get(f"{page_url}/undo")
    assert undo.status_code == 303 and undo.headers["location"] == page_url
    await shop.http.post(shop.cancellation_path(order_id, "/reject"), json={"reason": "no"})
    accept = await merchant.get(f"{page_url}/accept")
    assert accept.status_code == 303 and accept.headers["location"] == page_url


async def test_a_sold_out_sku_is_previewed_then_cancelled_in_one_job_from_the_page(shop, merchant):
    """Sold out › Cancel by SKU: the preview changes nothing; confirming starts one job
    whose outcome per order the page shows, as the API does; sending it twice acts once."""
    sku = "sku-soldout"
    items = [
        {"item_id": "i1", "sku": sku, "quantity": 1, "unit_price": 10000},
        {"item_id": "i2", "sku": "sku-tee", "quantity": 1, "unit_price": 7000},
    ]
    whole = await shop.put_order(items=items[:1], shipping_fee=0)
    mixed = await shop.put_order(items=items, shipping_fee=0)
    form = {"sku": sku, "reason_code": "sold_out", "refund_method": "original"}

    preview = await merchant.post("/admin/bulk", form | {"step": "preview"})
    assert preview.status_code == 200, preview.text
    assert whole in preview.text and mixed in preview.text
    assert "OK, cancel 2 orders" in preview.text
    for order_id in (whole, mixed):
        assert (await shop.http.get(shop.cancellation_path(order_id))).status_code == 404

    key = re.search(r'name="key" value="([^"]+)"', preview.text)
    assert key
    confirm = form | {"step": "confirm", "key": key.group(1)}
    started = await merchant.post("/admin/bulk", confirm)
    assert started.status_code == 303, started.text
    again = await merchant.post("/admin/bulk", confirm)
    assert again.headers["location"] == started.headers["location"]
    job_url = started.headers["location"]
    for _ in range(100):
        page = await merchant.get(job_url)
        if 'id="bulk-status">completed' in page.text:
            break
        await asyncio.sleep(0.2)
    assert 'id="bulk-status">completed' in page.text
    whole_view = await shop.wait_for(whole, lambda v: v["status"] == "canceled")
    mixed_view = await shop.wait_for(mixed, lambda v: v["status"] == "canceled")
    assert whole_view["items"] is None
    assert mixed_view["items"] == [{"item_id": "i1", "quantity": 1}]
    assert whole_view["cancellation_id"] in page.text and mixed_view["cancellation_id"] in page.text
