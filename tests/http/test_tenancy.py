"""Many shops in one deployment: an attacker holding one shop's token reaches nothing of
another shop's cancellations or money, tried over HTTP on the real stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from domain.contract import cancellation_workflow_id
from tests.http.conftest import bearer_client
from tests.http.routes import ACCEPT, BY_ID

ITEMS = [{"item_id": "i1", "sku": "sku-mug", "quantity": 1, "unit_price": 10000}]


def _document(tenders: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    return {
        "customer_id": "cust-1",
        "currency": "KRW",
        "status": "paid",
        "shipping_fee": 0,
        "items": ITEMS,
        "tenders": tenders,
    } | changes


def _card(payment_id: str, amount: int = 10000, tender_id: str = "t1") -> dict[str, Any]:
    return {"tender_id": tender_id, "kind": "card", "amount": amount, "payment_id": payment_id}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenants(make_tenant, hook_stack) -> AsyncIterator[dict[str, Any]]:
    """The three shops with their own provider accounts, by role."""
    ids = sorted(hook_stack.settings.provider_accounts, key=len)
    short, base, longer = ids  # "…ac", "…acc", "…acc-a"
    async with make_tenant(base) as a, make_tenant(longer) as b, make_tenant(short) as c:
        yield {"acc": a, "acc-a": b, "ac": c}


class TestPaymentsOfAnotherShop:
    async def test_a_shop_cant_store_an_order_paid_with_another_shops_payment(self, tenants):
        """Attack 1 of release 1: shop A names shop B's payment and cancels with accept."""
        a, b = tenants["acc"], tenants["acc-a"]
        victim_payment = await b.card_payment(10000)
        order_id = "stolen-1"
        answer = await a.http.put(a.order_path(order_id), json=_document([_card(victim_payment)]))
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "payment_mismatch"
        assert "t1" in error["message"]
        assert (await a.http.get(a.order_path(order_id))).json()["error"]["code"] == (
            "order_not_found"
        )
        start = await a.http.post(
            a.cancellation_path(order_id),
            json={"initiated_by": "merchant", "channel": "admin", "accept": ACCEPT},
        )
        assert start.status_code == 404
        ledger = (await b.payment(victim_payment))["ledger"]
        assert [e["type"] for e in ledger] == ["authorize", "capture"]

    async def test_a_payment_of_the_shops_own_account_is_refunded_there(self, tenants):
        a = tenants["acc"]
        order_id = await a.put_order()
        await a.request_cancellation(order_id)
        accepted = await a.http.post(a.cancellation_path(order_id, "/accept"), json=ACCEPT)
        assert accepted.status_code == 200, accepted.text
        view = await a.wait_for(order_id, lambda v: v["status"] == "canceled")
        order = (await a.http.get(a.order_path(order_id))).json()
        payment = await a.payment(order["tenders"][0]["payment_id"])
        assert payment["refunded_amount"] == view["refunded"]["amount"] == 27000 + 3000

    async def test_another_accounts_payment_is_not_found_at_the_provider(self, tenants):
        a, b = tenants["acc"], tenants["acc-a"]
        payment = await b.card_payment(500)
        async with a._sandbox() as sandbox:
            assert (await sandbox.get(f"/v1/payments/{payment}")).status_code == 404
            refund = await sandbox.post(
                f"/v1/payments/{payment}/refunds",
                json={"amount": 500},
                headers={"Idempotency-Key": "steal-1"},
            )
            assert refund.status_code == 404
        assert (await b.payment(payment))["refunded_amount"] == 0

    @pytest.mark.parametrize(
        "payment_id",
        [
            "P/recapture?x=",
            "P/../../faults#",
            "..",
            "%2e%2e",
            "x\ny",
            "a b",
            "a\x00b",
            "a~b",
            "-leading-dash",
            "p" * 129,
        ],
        ids=[
            "recapture",
            "faults",
            "dotdot",
            "encoded-dots",
            "newline",
            "space",
            "nul",
            "tilde",
            "leading-dash",
            "129-chars",
        ],
    )
    async def test_a_payment_id_that_is_not_an_id_is_refused_and_nothing_is_stored(
        self, tenants, payment_id
    ):
        a = tenants["acc"]
        order_id = "injected"
        answer = await a.http.put(a.order_path(order_id), json=_document([_card(payment_id)]))
        assert answer.status_code == 422, answer.text
        assert (await a.http.get(a.order_path(order_id))).status_code == 404

    async def test_a_128_character_payment_id_is_an_id(self, tenants):
        """The limit is inclusive: 128 characters pass the format and reach the provider."""
        a = tenants["acc"]
        answer = await a.http.put(a.order_path("long-id"), json=_document([_card("p" * 128)]))
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "payment_mismatch"

    async def test_a_payment_in_another_currency_is_refused(self, tenants):
        a = tenants["acc"]
        payment = await a.card_payment(10000, currency="USD")
        answer = await a.http.put(a.order_path("usd"), json=_document([_card(payment)]))
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "payment_mismatch"
        assert "USD" in answer.json()["error"]["message"]

    async def test_a_payment_with_less_than_the_tender_is_refused(self, tenants):
        a = tenants["acc"]
        payment = await a.card_payment(9999)
        answer = await a.http.put(a.order_path("short"), json=_document([_card(payment)]))
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "payment_mismatch"

    async def test_an_unreachable_provider_stores_nothing(self, dead_provider_hook):
        url, shop_id, token = dead_provider_hook
        async with bearer_client(url, token) as http:
            path = f"/v1/shops/{shop_id}/orders/unreachable"
            answer = await http.put(path, json=_document([_card("pay_anything")]))
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "provider_unavailable"
            assert (await http.get(path)).status_code == 404


class TestIdsAcrossShops:
    async def test_a_shop_whose_id_is_a_prefix_of_anothers_gets_its_own_cancellation(self, tenants):
        """Attack 2 of release 1: shop ``acc`` + order ``a-1`` was shop ``acc-a`` + order
        ``1``; the start answered 200 with the other shop's view."""
        a, b = tenants["acc"], tenants["acc-a"]
        assert b.shop_id == f"{a.shop_id}-a"
        await b.put_order(order_id="1")
        await a.put_order(order_id="a-1")
        theirs = await b.request_cancellation("1", reason="the victim's private reason")
        start = await a.http.post(
            a.cancellation_path("a-1"),
            json={"initiated_by": "customer", "channel": "my_account"},
        )
        assert start.status_code == 201, start.text
        mine = start.json()
        assert mine["shop_id"] == a.shop_id and mine["order_id"] == "a-1"
        assert mine["workflow_id"] == cancellation_workflow_id(a.shop_id, "a-1", 1)
        assert mine["workflow_id"] != theirs["workflow_id"]
        assert "the victim's private reason" not in start.text
        # Each shop reads only its own run, by order and by cancellation id.
        assert (await a.view("a-1"))["cancellation_id"] == mine["cancellation_id"]
        assert (await b.view("1"))["cancellation_id"] == theirs["cancellation_id"]
        foreign = await a.http.get(f"{a.base}/cancellations/{theirs['cancellation_id']}")
        assert foreign.status_code == 404

    async def test_the_victims_order_can_still_be_canceled_after_the_others_run_closed(
        self, tenants
    ):
        a, b = tenants["acc"], tenants["acc-a"]
        await b.put_order(order_id="2")
        await a.put_order(order_id="a-2")
        await b.request_cancellation("2")
        withdrawn = await b.http.post(b.cancellation_path("2", "/withdraw"))
        assert withdrawn.status_code == 200
        mine = await a.request_cancellation("a-2")
        assert mine["shop_id"] == a.shop_id
        accepted = await a.http.post(a.cancellation_path("a-2", "/accept"), json=ACCEPT)
        assert accepted.status_code == 200, accepted.text
        assert (await a.wait_for("a-2", lambda v: v["status"] == "canceled"))["shop_id"] == (
            a.shop_id
        )

    async def test_a_third_shop_whose_id_is_a_prefix_sees_nothing_of_the_others(self, tenants):
        a, c = tenants["acc"], tenants["ac"]
        assert a.shop_id.startswith(c.shop_id)
        await a.put_order(order_id="c-a-3")
        await c.put_order(order_id="c-a-3")
        theirs = await a.request_cancellation("c-a-3")
        mine = await c.request_cancellation("c-a-3")
        assert mine["cancellation_id"] != theirs["cancellation_id"]
        listed = (await c.http.get(f"{c.base}/cancellations")).json()["items"]
        assert {v["shop_id"] for v in listed} == {c.shop_id}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def victim(tenants) -> dict[str, Any]:
    """Shop ``acc-a``'s cancellation waiting for a bank deposit; shop ``acc`` has an order
    with the same id and a cancellation of its own."""
    a, b = tenants["acc"], tenants["acc-a"]
    document = _document([{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}])
    for shop in (a, b):
        answer = await shop.http.put(shop.order_path("shared-id"), json=document)
        assert answer.status_code == 201, answer.text
        await shop.request_cancellation("shared-id")
    bank = {"bank": "KB", "account_number": "9876543210", "holder": "Vic"}
    await b.http.post(
        b.cancellation_path("shared-id", "/accept"), json=ACCEPT | {"bank_account": bank}
    )
    view: dict[str, Any] = await b.wait_for(
        "shared-id",
        lambda v: v["refunds"] and v["refunds"][0]["status"] == "awaiting_confirmation",
    )
    return view


@pytest.mark.parametrize(
    ("method", "template", "body"), BY_ID, ids=[f"{m} {t}" for m, t, _ in BY_ID]
)
async def test_another_shops_cancellation_or_refund_id_is_not_found_under_ones_own_shop(
    tenants, victim, method, template, body
):
    a, b = tenants["acc"], tenants["acc-a"]
    before = await b.view("shared-id")
    path = template.format(
        c=f"{a.base}/cancellations/{victim['cancellation_id']}",
        o=a.order_path("shared-id"),
        r=victim["refunds"][0]["refund_id"],
    )
    answer = await a.http.request(method, path, json=body)
    if template.startswith("{o}"):
        # Shop acc's own cancellation of "shared-id" waits for a decision: its run refuses
        # a refund action before it looks for the line, and says nothing of shop acc-a's.
        assert answer.status_code in (404, 409), answer.text
    else:
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "cancellation_not_found"
    assert "9876543210" not in answer.text and "KB" not in answer.text
    after = await b.view("shared-id")
    assert (after["status"], after["refunds"], len(after["history"])) == (
        before["status"],
        before["refunds"],
        len(before["history"]),
    )


# Path ids the API must refuse before anything is read or stored.
BAD_IDS = {
    "tilde": "a~b",
    "space": "a%20b",
    "newline": "a%0Ab",
    "nul": "a%00b",
    "question": "a%3Fb",
    "hash": "a%23b",
    "encoded-dots": "%2E%2E",
    "percent": "a%25b",
    "65-chars": "o" * 65,
}


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_an_order_id_that_is_not_an_id_is_refused_and_nothing_is_stored(tenants, bad):
    a = tenants["acc"]
    document = _document([{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}])
    answer = await a.http.put(f"{a.base}/orders/{bad}", json=document)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    start = await a.http.post(
        f"{a.base}/orders/{bad}/cancellation",
        json={"initiated_by": "merchant", "channel": "admin", "accept": ACCEPT},
    )
    assert start.status_code == 422
    listed = (await a.http.get(f"{a.base}/cancellations?limit=100")).json()["items"]
    assert all("~b" not in v["order_id"] and len(v["order_id"]) <= 64 for v in listed)


async def test_a_64_character_order_id_is_an_id(tenants):
    a = tenants["acc"]
    order_id = "o" * 64
    await a.put_order(order_id=order_id)
    view = await a.request_cancellation(order_id)
    assert view["order_id"] == order_id


@pytest.mark.parametrize(
    "bad", ["a%2Fb", "..%2F..%2Ffaults", "%2F"], ids=["slash", "dotdot-slash", "lone-slash"]
)
async def test_an_encoded_slash_in_an_id_never_reaches_another_route(tenants, bad):
    a = tenants["acc"]
    answer = await a.http.put(f"{a.base}/orders/{bad}", json=_document([]))
    assert answer.status_code in (404, 405, 422), answer.text
    assert "error" in answer.json()


class TestOrderInvariants:
    async def test_an_order_with_a_cancellation_cant_change_its_items_or_tenders(self, tenants):
        a = tenants["acc"]
        tenders = [{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}]
        document = _document(tenders)
        assert (await a.http.put(a.order_path("locked"), json=document)).status_code == 201
        await a.request_cancellation("locked")
        await a.http.post(a.cancellation_path("locked", "/reject"), json={"reason": "no"})
        for change in (
            {"currency": "USD"},
            {"items": [ITEMS[0] | {"quantity": 2}], "tenders": [tenders[0] | {"amount": 20000}]},
            {"tenders": [tenders[0] | {"tender_id": "t2"}]},
        ):
            answer = await a.http.put(a.order_path("locked"), json=document | change)
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "order_locked"
        # The same document again is fine, and so is a status change once nothing holds it.
        again = await a.http.put(a.order_path("locked"), json=document | {"status": "preparing"})
        assert again.status_code == 200, again.text
        assert (await a.http.get(a.order_path("locked"))).json()["status"] == "preparing"

    async def test_an_accepted_cancellation_stops_the_order_from_shipping(self, tenants):
        a = tenants["acc"]
        document = _document([{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}])
        await a.http.put(a.order_path("ship-after-accept"), json=document)
        await a.request_cancellation("ship-after-accept")
        await a.http.post(
            a.cancellation_path("ship-after-accept", "/accept"),
            json=ACCEPT | {"bank_account": {"bank": "KB", "account_number": "1234", "holder": "H"}},
        )
        shipped = await a.http.post(
            a.order_path("ship-after-accept", "/fulfillment"), json={"status": "in_transit"}
        )
        assert shipped.status_code == 409
        assert shipped.json()["error"]["code"] == "invalid_transition"
        order = (await a.http.get(a.order_path("ship-after-accept"))).json()
        assert order["status"] == "cancellation_in_progress"

    async def test_a_request_that_only_waits_lets_the_order_ship(self, tenants):
        a = tenants["acc"]
        await a.put_order(order_id="ship-while-waiting")
        await a.request_cancellation("ship-while-waiting")
        shipped = await a.http.post(
            a.order_path("ship-while-waiting", "/fulfillment"), json={"status": "in_transit"}
        )
        assert shipped.status_code == 200
        accepted = await a.http.post(
            a.cancellation_path("ship-while-waiting", "/accept"), json=ACCEPT
        )
        assert accepted.json()["error"]["code"] == "order_shipped"

    async def test_points_in_another_currency_than_the_customers_are_refused(self, tenants):
        a = tenants["acc"]
        set_usd = await a.http.put(
            f"{a.base}/customers/usd-customer",
            json={"points": 5000, "credits": 0, "currency": "USD"},
        )
        assert set_usd.status_code == 200, set_usd.text
        document = _document(
            [{"tender_id": "t1", "kind": "points", "amount": 10000}], customer_id="usd-customer"
        )
        answer = await a.http.put(a.order_path("krw-points"), json=document)
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "validation_error"
        assert (await a.http.get(a.order_path("krw-points"))).status_code == 404

    async def test_the_first_order_paying_points_fixes_the_customers_currency(self, tenants):
        a = tenants["acc"]
        krw = _document(
            [{"tender_id": "t1", "kind": "credits", "amount": 10000}], customer_id="new-customer"
        )
        assert (await a.http.put(a.order_path("krw-credits"), json=krw)).status_code == 201
        usd = krw | {"currency": "USD"}
        answer = await a.http.put(a.order_path("usd-credits"), json=usd)
        assert answer.status_code == 422
        balances = (await a.http.get(f"{a.base}/customers/new-customer")).json()
        assert balances["currency"] == "KRW"
