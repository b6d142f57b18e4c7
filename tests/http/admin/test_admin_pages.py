"""The list, Order details and settings pages over plain HTTP, checked against the API."""

from __future__ import annotations

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
