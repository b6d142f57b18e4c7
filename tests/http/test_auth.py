"""Bearer tokens: 401 without a valid one, 403 on another shop's paths, for every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.admin_store import AdminStore
from tests.http.conftest import bearer_client
from tests.http.routes import ACCEPT, ROUTES

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


class Victim:
    """A shop with an order, a cancellation awaiting a bank deposit, stock and balances."""

    def __init__(self, shop: Any, order_id: str, view: dict[str, Any], document: dict[str, Any]):
        self.shop = shop
        self.order_id = order_id
        self.view = view
        self.document = document

    def request(self, method: str, template: str, body: Any) -> tuple[str, str, Any]:
        s = f"/v1/shops/{self.shop.shop_id}"
        path = template.format(
            s=s,
            o=f"{s}/orders/{self.order_id}",
            c=f"{s}/cancellations/{self.view['cancellation_id']}",
            r=self.view["refunds"][0]["refund_id"],
        )
        if method == "PUT" and template == "{o}":
            body = self.document
        return method, path, body

    async def state(self) -> tuple[Any, ...]:
        """Everything the routes could change, read with the victim's own token."""
        http = self.shop.http
        s = self.shop.base
        order = (await http.get(self.shop.order_path(self.order_id))).json()
        view = (await http.get(self.shop.cancellation_path(self.order_id))).json()
        return (
            order,
            view["status"],
            [r["status"] for r in view["refunds"]],
            len(view["history"]),
            (await http.get(f"{s}/settings")).json(),
            (await http.get(f"{s}/stock/sku-mug")).json(),
            (await http.get(f"{s}/customers/cust-1")).json(),
        )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def victim(make_shop) -> AsyncIterator[Victim]:
    """Shared by the route tests: each one also checks that the calls before it changed nothing."""
    async with make_shop() as shop:
        yield await _victim(shop)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def intruder(make_shop) -> AsyncIterator[Any]:
    """Another shop, with a valid token of its own."""
    async with make_shop() as shop:
        yield shop


async def _victim(shop) -> Victim:
    document = {
        "customer_id": "cust-1",
        "currency": "KRW",
        "status": "paid",
        "shipping_fee": 0,
        "items": [{"item_id": "i1", "sku": "sku-mug", "quantity": 1, "unit_price": 10000}],
        "tenders": [{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}],
    }
    order_id = "victim-order"
    assert (await shop.http.put(shop.order_path(order_id), json=document)).status_code == 201
    await shop.http.put(f"{shop.base}/stock/sku-mug", json={"available": 7})
    await shop.http.put(f"{shop.base}/customers/cust-1", json={"points": 5, "credits": 6})
    await shop.request_cancellation(order_id)
    bank = {"bank": "KB", "account_number": "9876543210", "holder": "Vic"}
    await shop.http.post(
        shop.cancellation_path(order_id, "/accept"), json=ACCEPT | {"bank_account": bank}
    )
    view = await shop.wait_for(
        order_id, lambda v: v["refunds"] and v["refunds"][0]["status"] == "awaiting_confirmation"
    )
    return Victim(shop, order_id, view, document)


def _send(http: httpx.AsyncClient, method: str, path: str, body: Any, **headers: str):
    return http.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "template", "body"), ROUTES, ids=ROUTE_IDS)
async def test_another_shops_token_is_forbidden_and_gets_nothing(
    victim, intruder, method, template, body
):
    """A valid token of shop B on shop A's path: 403, none of A's data, nothing changed."""
    before = await victim.state()
    method, path, body = victim.request(method, template, body)
    answer = await _send(intruder.http, method, path, body, **{"Idempotency-Key": "k-1"})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "forbidden"
    assert victim.view["cancellation_id"] not in answer.text
    assert "cust-1" not in answer.text and "KB" not in answer.text
    assert await victim.state() == before


@pytest.mark.parametrize(("method", "template", "body"), ROUTES, ids=ROUTE_IDS)
async def test_every_route_refuses_a_missing_or_unknown_token(
    victim, anonymous, method, template, body
):
    method, path, body = victim.request(method, template, body)
    missing = await _send(anonymous, method, path, body)
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await _send(anonymous, method, path, body, Authorization="Bearer not-a-token")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "token abc", "Bearer " + "x" * 600]
)
async def test_a_malformed_authorization_header_is_unauthorized(anonymous, shop, header):
    answer = await anonymous.get(f"{shop.base}/settings", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


async def test_the_token_is_checked_before_the_body_is_read(anonymous, shop):
    """Without a token even malformed JSON gets 401: nothing is parsed for strangers."""
    answer = await anonymous.post(
        shop.cancellation_path("o1"),
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 401


async def test_a_configured_token_works_for_its_shop(hook_stack):
    """``ADMIN_HOOK_TOKENS`` pairs work like stored tokens."""
    [(token, shop_id)] = hook_stack.settings.admin_hook_tokens.items()
    async with bearer_client(hook_stack.url, token) as http:
        mine = await http.get(f"/v1/shops/{shop_id}/settings")
        assert mine.status_code == 200
        assert mine.json()["undo_window"] == "P30D"
        theirs = await http.get("/v1/shops/someone-else/settings")
        assert theirs.status_code == 403


async def test_a_revoked_database_token_is_unauthorized(shop, pool):
    assert (await shop.http.get(f"{shop.base}/settings")).status_code == 200
    assert await AdminStore(pool).revoke_token(shop.token)
    answer = await shop.http.get(f"{shop.base}/settings")
    assert answer.status_code == 401


async def test_the_actor_is_the_shop_unless_x_actor_names_the_user(shop, store):
    order_id = await shop.put_order()
    await shop.request_cancellation(order_id)
    rejected = await shop.http.post(
        shop.cancellation_path(order_id, "/reject"), json={"reason": "packed already"}
    )
    assert rejected.json()["history"][-1]["actor"] == f"merchant:{shop.shop_id}"
    events = await store.events(rejected.json()["cancellation_id"])
    assert events[-1]["actor"] == f"merchant:{shop.shop_id}"

    for bad in ["", "has space", "x" * 101, "<script>"]:
        answer = await shop.http.get(f"{shop.base}/settings", headers={"X-Actor": bad})
        assert answer.status_code == 422, bad
        assert answer.json()["error"]["code"] == "validation_error"
        assert "X-Actor" in answer.json()["error"]["message"]
