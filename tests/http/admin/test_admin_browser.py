"""The store-admin guide walked in a real browser (chromium, driven by Playwright).

Each test starts where the guide starts (a customer's request arrives through the API, or
an order exists), does what the guide tells the merchant to do on the pages, and then
checks that the page and the API's view of the cancellation agree.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ACCEPT = {"reason_code": "changed_mind", "reason": "customer asked", "refund_method": "original"}
# Refunds run in the worker after the acceptance answered; a healthy machine needs ~1 s.
SETTLE_SECONDS = 20.0


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser, hook_stack, shop) -> AsyncIterator[Page]:
    """A browser tab of :func:`shop`'s merchant ``ana``, signed in (cookies of its own)."""
    context = await browser.new_context(base_url=hook_stack.url)
    context.set_default_timeout(10_000)
    tab = await context.new_page()
    await tab.goto("/admin")
    await expect(tab).to_have_url(re.compile(r"/admin/sign-in"))
    await tab.locator("input[name=token]").fill(shop.token)
    await tab.locator("input[name=name]").fill("ana")
    await tab.get_by_role("button", name="Sign in").click()
    await expect(tab).to_have_url(re.compile(r"/admin/cancellations$"))
    try:
        yield tab
    finally:
        await context.close()


async def _wait_for_text(
    page: Page, selector: str, text: str, within: float = SETTLE_SECONDS
) -> None:
    """Reload until ``selector`` shows ``text``: the worker moves on after the page answered."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        shown = await page.locator(selector).first.inner_text()
        if text in shown:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{selector} shows {shown!r}, not {text!r}, after {within}s")
        await asyncio.sleep(0.2)
        await page.reload()


async def _open(page: Page, view: dict[str, Any]) -> None:
    await page.goto(f"/admin/cancellations/{view['cancellation_id']}")


async def _canceled_through_the_api(shop, **order: Any) -> tuple[str, dict[str, Any]]:
    order_id = await shop.put_order(**order)
    await shop.request_cancellation(order_id)
    answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    assert answer.status_code == 200, answer.text
    return order_id, await shop.wait_for(order_id, lambda v: v["status"] == "canceled")


async def test_customer_request_found_proceeded_quoted_and_accepted_ends_canceled(shop, page):
    """Cancellations › Proceed › Accept: the quote first, then Canceled once refunded."""
    order_id = await shop.put_order()
    requested = await shop.request_cancellation(order_id, reason="ordered it twice")
    await page.goto("/admin/cancellations?status=requested")
    row = page.locator(f"tr[data-cancellation='{requested['cancellation_id']}']")
    await expect(row).to_contain_text("Cancellation requested [Customer]")
    await expect(row).to_contain_text("30,000 KRW")
    await row.get_by_role("link", name="Proceed").click()
    await expect(page.locator("#status")).to_have_text("Cancellation requested [Customer]")
    await expect(page.locator("#order-status")).to_have_text("Cancellation requested")

    await page.get_by_role("link", name="Accept cancellation request").click()
    await page.locator("select[name=reason_code]").select_option("changed_mind")
    await page.locator("textarea[name=reason]").fill("the customer ordered twice")
    await page.get_by_role("button", name="Review refund").click()
    quote = page.locator("table.quote")
    await expect(quote).to_contain_text("Refund to the card")
    await expect(quote.locator("tfoot")).to_contain_text("30,000 KRW")
    api_quote = await shop.http.post(shop.cancellation_path(order_id, "/quote"), json={})
    assert api_quote.json()["refundable"] == 30000
    assert (await shop.view(order_id))["status"] == "requested", "the review changes nothing"

    await page.get_by_role("button", name="OK, accept cancellation request").click()
    await expect(page.locator(".notice")).to_contain_text("accepted")
    await _wait_for_text(page, "#status", "Canceled")
    await expect(page.locator("#refunded")).to_have_text("30,000 KRW")
    await expect(page.locator(".refund-status")).to_have_text("Refunded")
    view = await shop.view(order_id)
    assert view["status"] == "canceled" and view["order_status"] == "canceled"
    assert view["refunded"] == {"amount": 30000, "currency": "KRW"}
    accepted = [e for e in view["history"] if e["event"] == "accepted"]
    assert accepted and accepted[0]["actor"] == "merchant:ana"
    await expect(page.locator("table.history")).to_contain_text("merchant:ana")


async def test_bank_deposit_refund_is_confirmed_on_the_page(shop, page):
    """A bank transfer goes back by deposit: the account is masked, the deposit confirmed."""
    order_id = await shop.put_order(
        items=[{"item_id": "i1", "sku": "sku-tee", "quantity": 1, "unit_price": 7000}],
        tenders=[{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}],
    )
    requested = await shop.request_cancellation(order_id)
    await _open(page, requested)
    await page.get_by_role("link", name="Accept cancellation request").click()
    await page.get_by_role("button", name="Review refund").click()
    await expect(page.locator(".error")).to_contain_text("enter the customer's bank account")
    await page.locator("input[name=bank]").fill("KB")
    await page.locator("input[name=account_number]").fill("110-123-456789")
    await page.locator("input[name=holder]").fill("Ana Kim")
    await page.get_by_role("button", name="Review refund").click()
    await expect(page.locator("table.quote")).to_contain_text("Bank deposit")
    await page.get_by_role("button", name="OK, accept cancellation request").click()

    await _wait_for_text(page, ".refund-status", "Waiting for your bank deposit")
    assert "110-123-456789" not in await page.content()
    await expect(page.locator("table.refunds")).to_contain_text("**********6789")
    await page.locator("input[name=reference]").fill("KB-TRANSFER-7")
    await page.get_by_role("button", name="Confirm bank deposit").click()
    await _wait_for_text(page, "#status", "Canceled")
    await expect(page.locator(".refund-status")).to_contain_text("KB-TRANSFER-7")
    view = await shop.view(order_id)
    assert view["status"] == "canceled"
    assert view["refunds"][0]["status"] == "succeeded"
    assert view["refunds"][0]["channel"] == "bank_deposit"
    assert view["refunded"]["amount"] == 10000


async def test_failed_card_refund_is_switched_to_credits(shop, page):
    """The provider declines: the line shows Failed, and Switch to credits completes it."""
    payment = await shop.card_payment(30000, refund="decline")
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    requested = await shop.request_cancellation(order_id)
    answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    assert answer.status_code == 200, answer.text
    await _open(page, requested)
    await _wait_for_text(page, ".refund-status", "Failed")
    await expect(page.locator(".attention")).to_contain_text("A refund failed")
    await page.get_by_role("button", name="Switch to credits").click()
    await _wait_for_text(page, "#status", "Canceled")
    await expect(page.locator("table.refunds")).to_contain_text("Store credits")
    view = await shop.view(order_id)
    assert view["status"] == "canceled" and view["needs_attention"] in (None, "none")
    assert [(r["method"], r["status"]) for r in view["refunds"]] == [("credits", "succeeded")]
    balances = await shop.http.get(f"{shop.base}/customers/cust-1")
    assert balances.json()["credits"] == 30000


async def test_undo_recaptures_the_card_payment(shop, page):
    """Undo shows what the provider will be asked, then the order is back as it was."""
    order_id, canceled = await _canceled_through_the_api(shop)
    await _open(page, canceled)
    await page.get_by_role("link", name="Undo cancellation").click()
    await expect(page.locator(".provider-line")).to_contain_text("30,000 KRW went back to the card")
    # The provider's recapture check, shown before the merchant confirms.
    await expect(page.locator(".provider-line")).to_contain_text("can take this payment again")
    await expect(page.locator("#repay-total")).to_have_count(0)
    await page.locator("textarea[name=reason]").fill("the customer wants it after all")
    await page.get_by_role("button", name="Undo cancellation").click()
    await _wait_for_text(page, "#status", "Undone")
    await expect(page.locator("#order-status")).to_have_text("Paid")
    view = await shop.view(order_id)
    assert view["status"] == "undone" and view["order_status"] == "paid"
    payment = await shop.payment(canceled["refunds"][0]["payment_id"])
    assert [e["type"] for e in payment["ledger"]].count("recapture") == 1


async def test_undo_that_needs_repayment_waits_for_the_confirmed_payment(shop, page):
    """The provider can't recapture: the page says so, offers repayment, then confirms it."""
    payment = await shop.card_payment(30000, recapture="not_possible")
    order_id, canceled = await _canceled_through_the_api(
        shop, tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await _open(page, canceled)
    await page.get_by_role("link", name="Undo cancellation").click()
    # Before anything is confirmed: the provider's answer, how much and within how long.
    await expect(page.locator(".provider-line")).to_contain_text("can't take this payment again")
    await expect(page.locator("#repay-total")).to_contain_text("30,000 KRW")
    await expect(page.locator("#repay-total")).to_contain_text("7 days")
    await page.locator("textarea[name=reason]").fill("keeps the order")
    await page.get_by_role("button", name="Undo cancellation").click()
    await expect(page.locator(".error")).to_contain_text("can't take the canceled payment again")
    await expect(page.locator("#recapture")).to_be_visible()
    assert (await shop.view(order_id))["status"] == "canceled", "a refused undo changes nothing"

    await page.get_by_role("button", name="Undo and require repayment").click()
    await _wait_for_text(page, "#status", "Waiting for the customer to pay again")
    await expect(page.locator("#repayment-due")).to_contain_text("30,000 KRW")
    waiting = await shop.view(order_id)
    assert waiting["status"] == "awaiting_repayment"
    assert waiting["repayment_due"] == {"amount": 30000, "currency": "KRW"}

    await page.locator("#repayment input[name=reference]").fill("REPAID-1")
    await page.get_by_role("button", name="Confirm repayment").click()
    await _wait_for_text(page, "#status", "Undone")
    assert (await shop.view(order_id))["status"] == "undone"


async def test_partial_cancellation_from_order_details(shop, page):
    """Order details › Cancel one of two mugs: the quote, then only that item refunded."""
    order_id = await shop.put_order()
    await page.get_by_role("link", name="Orders › All orders").click()
    await page.locator("input[name=order_id]").fill(order_id)
    await page.get_by_role("button", name="Open Order details").click()
    await expect(page.locator("h1")).to_contain_text(order_id)
    await page.locator("input[name=scope][value=items]").check()
    await page.locator("input[name='qty-i1']").fill("1")
    await page.locator("select[name=reason_code]").select_option("sold_out")
    await page.locator("textarea[name=reason]").fill("the last mug broke")
    await page.get_by_role("button", name="Accept cancellation request").click()
    await expect(page.locator("main")).to_contain_text("Only these items: i1 × 1")
    await expect(page.locator("table.quote tfoot")).to_contain_text("10,000 KRW")
    await page.get_by_role("button", name="OK, cancel").click()
    await _wait_for_text(page, "#status", "Canceled")
    view = await shop.view(order_id)
    assert view["status"] == "canceled" and view["initiated_by"] == "merchant"
    assert view["items"] == [{"item_id": "i1", "quantity": 1}]
    assert view["refunded"] == {"amount": 10000, "currency": "KRW"}
    assert view["history"][0]["actor"] == "merchant:ana"
    await page.get_by_role("link", name=order_id).click()
    await expect(page.locator("tbody tr", has_text="sku-mug").first).to_contain_text("1")
    order = (await shop.http.get(shop.order_path(order_id))).json()
    assert order["canceled_quantities"] == {"i1": 1}
