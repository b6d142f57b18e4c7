"""The seed's cancellation flows walked through the admin hook, and its refusals."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

import activities
from domain.cancellation import CancellationView
from domain.money import Money

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ACCEPT = {"reason_code": "changed_mind", "reason": "customer asked", "refund_method": "original"}


async def test_customer_request_accepted_and_refunded_ends_canceled(shop, store):
    """Request from My Account → merchant accepts → card refunded → order canceled."""
    order_id = await shop.put_order()
    requested = await shop.request_cancellation(order_id)
    assert requested["status"] == "requested"
    assert requested["order_status"] == "cancellation_requested"
    assert sorted(requested["allowed_actions"]) == ["accept", "reject", "withdraw"]

    answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] in ("in_progress", "canceled")

    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    assert final["refunded"] == {"amount": 30000, "currency": "KRW"}
    assert [r["status"] for r in final["refunds"]] == ["succeeded"]
    order = (await shop.http.get(shop.order_path(order_id))).json()
    assert order["status"] == "canceled"
    payment = await shop.payment(order["tenders"][0]["payment_id"])
    assert payment["refunded_amount"] == 30000
    events = [e["event"] for e in await store.events(final["cancellation_id"])]
    assert events[0] == "requested"
    assert "accepted" in events


async def test_bank_transfer_waits_for_the_merchants_confirmed_deposit(shop):
    """A bank transfer goes back by deposit; the merchant confirms it with a reference."""
    order_id = await shop.put_order(
        items=[{"item_id": "i1", "sku": "sku-tee", "quantity": 1, "unit_price": 7000}],
        tenders=[{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}],
    )
    await shop.request_cancellation(order_id)
    accept = ACCEPT | {
        "bank_account": {"bank": "KB", "account_number": "110-123-456789", "holder": "Ana"}
    }
    answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=accept)
    assert answer.status_code == 200, answer.text
    view = await shop.wait_for(
        order_id, lambda v: v["refunds"] and v["refunds"][0]["status"] == "awaiting_confirmation"
    )
    assert "confirm_refund" in view["allowed_actions"]
    refund_id = view["refunds"][0]["refund_id"]

    confirm = await shop.http.post(
        shop.cancellation_path(order_id, f"/refunds/{refund_id}/confirm"),
        json={"reference": "KB-TRANSFER-1"},
    )
    assert confirm.status_code == 200, confirm.text
    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    assert final["refunds"][0]["status"] == "succeeded"
    assert final["refunded"]["amount"] == 10000


async def test_declined_card_refund_is_retried_as_credits(shop):
    """A refund the provider declines fails for good; the merchant switches it to credits."""
    payment = await shop.card_payment(30000, refund="decline")
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await shop.request_cancellation(order_id)
    await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    failed = await shop.wait_for(order_id, lambda v: v["needs_attention"] == "refund_failed")
    assert "retry_refund" in failed["allowed_actions"]
    refund_id = failed["refunds"][0]["refund_id"]

    retry = await shop.http.post(
        shop.cancellation_path(order_id, f"/refunds/{refund_id}/retry"), json={"method": "credits"}
    )
    assert retry.status_code == 200, retry.text
    final = await shop.wait_for(order_id, lambda v: v["status"] == "canceled")
    assert final["refunds"][0]["method"] == "credits"
    balances = await shop.http.get(f"{shop.base}/customers/cust-1")
    assert balances.json() == {"points": 0, "credits": 30000}
    assert (await shop.payment(payment))["refunded_amount"] == 0


def _error(answer) -> str:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return str(body["error"]["code"])


async def _bank_transfer_awaiting_confirmation(shop) -> tuple[str, dict[str, Any]]:
    order_id = await shop.put_order(
        items=[{"item_id": "i1", "sku": "sku-tee", "quantity": 1, "unit_price": 7000}],
        tenders=[{"tender_id": "t1", "kind": "bank_transfer", "amount": 10000}],
    )
    await shop.request_cancellation(order_id)
    accept = ACCEPT | {"bank_account": {"bank": "KB", "account_number": "1234567", "holder": "A"}}
    await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=accept)
    view = await shop.wait_for(
        order_id, lambda v: v["refunds"] and v["refunds"][0]["status"] == "awaiting_confirmation"
    )
    return order_id, view


async def test_merchant_cancellation_starts_accepted_and_a_second_start_returns_it(shop, store):
    """201 for the new run, 200 with the same run while it is open; X-Actor names the user."""
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "bank_transfer", "amount": 30000}]
    )
    start = {
        "initiated_by": "merchant",
        "channel": "admin",
        "reason_code": "sold_out",
        "accept": ACCEPT
        | {"bank_account": {"bank": "KB", "account_number": "1234567", "holder": "Ana"}},
    }
    first = await shop.http.post(
        shop.cancellation_path(order_id), json=start, headers={"X-Actor": "ana@shop.example"}
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "in_progress"
    assert first.json()["initiated_by"] == "merchant"
    again = await shop.http.post(shop.cancellation_path(order_id), json=start)
    assert again.status_code == 200, again.text
    assert again.json()["cancellation_id"] == first.json()["cancellation_id"]
    events = await store.events(first.json()["cancellation_id"])
    assert {e["actor"] for e in events if e["event"] in ("requested", "accepted")} == {
        "merchant:ana@shop.example"
    }


async def test_a_cancellation_may_name_items_and_a_later_one_takes_the_rest(shop):
    """Partial cancellation: the items' price first, the rest with the shipping fee later."""
    order_id = await shop.put_order()
    start = {
        "initiated_by": "merchant",
        "channel": "admin",
        "reason_code": "sold_out",
        "items": [{"item_id": "i1", "quantity": 1}],
        "accept": {"reason_code": "sold_out", "reason": "one mug broke"},
    }
    first = await shop.http.post(shop.cancellation_path(order_id), json=start)
    assert first.status_code == 201, first.text
    assert first.json()["items"] == [{"item_id": "i1", "quantity": 1}]
    assert first.json()["refundable"]["amount"] == 10000
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")

    rest = await shop.http.post(shop.cancellation_path(order_id), json=start | {"items": None})
    assert rest.status_code == 201, rest.text
    assert rest.json()["cancellation_id"] != first.json()["cancellation_id"]
    assert rest.json()["refundable"]["amount"] == 20000
    listed = await shop.http.get(shop.order_path(order_id, "/cancellations"))
    assert len(listed.json()["items"]) == 2


KRW = "KRW"


def _money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": KRW}


async def test_refundable_and_refunded_are_money_from_the_start(shop):
    """Before acceptance the view already says what accepting would refund, and 0 refunded:
    in the start's answer, the live view, the stored list, and after a rejection."""
    order_id = await shop.put_order()
    requested = await shop.request_cancellation(order_id)
    assert (requested["refundable"], requested["refunded"]) == (_money(30000), _money(0))
    live = await shop.view(order_id)
    assert (live["refundable"], live["refunded"]) == (_money(30000), _money(0))
    # The shop's list reads the store's views, which the run wrote as it opened.
    listed = (await shop.http.get(f"{shop.base}/cancellations")).json()["items"]
    assert [(v["refundable"], v["refunded"]) for v in listed] == [(_money(30000), _money(0))]

    rejected = await shop.http.post(
        shop.cancellation_path(order_id, "/reject"), json={"reason": "already packed"}
    )
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["refundable"], rejected.json()["refunded"]) == (
        _money(30000),
        _money(0),
    )
    stored = (await shop.http.get(shop.order_path(order_id, "/cancellations"))).json()["items"]
    assert stored[0]["refunded"] == _money(0)

    # A partial request: only its items' price (no shipping fee).
    partial = await shop.request_cancellation(order_id, items=[{"item_id": "i2", "quantity": 1}])
    assert (partial["refundable"], partial["refunded"]) == (_money(7000), _money(0))


async def test_views_stored_before_money_from_the_start_read_with_0_refunded(shop, pool):
    """A view an earlier release stored before acceptance (no money at all) gets 0 refunded
    in its cancellation's currency from the migration, and money from the view's own
    currency when it names one."""
    order_id = await shop.put_order()
    view = await shop.request_cancellation(order_id)
    cid = view["cancellation_id"]
    await pool.execute(
        'UPDATE cancellations SET view = view || \'{"refundable": null, "refunded": null}\''
        " WHERE cancellation_id = $1",
        cid,
    )
    before = (await shop.http.get(f"{shop.base}/cancellations")).json()["items"][0]
    assert before["refunded"] is None  # nothing in that old view names a currency

    migration = Path(activities.__file__).parent / "migrations"
    (sql,) = [f.read_text() for f in migration.glob("*_view_refunded_from_the_start.sql")]
    await pool.execute(sql)
    after = (await shop.http.get(f"{shop.base}/cancellations")).json()["items"][0]
    assert after["refunded"] == _money(0)

    # An accepted view of an earlier release always had both; one with only `refundable`
    # (or only `repayment_due`) takes its currency from there.
    stored = CancellationView.model_validate_json(
        json.dumps({**view, "refundable": {"amount": 5, "currency": "USD"}, "refunded": None})
    )
    assert stored.refunded == Money(amount=0, currency="USD")


async def test_a_second_customer_request_while_open_answers_200_with_the_same_run(shop):
    order_id = await shop.put_order()
    first = await shop.request_cancellation(order_id)
    body = {"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"}
    again = await shop.http.post(shop.cancellation_path(order_id), json=body)
    assert again.status_code == 200
    assert again.json()["cancellation_id"] == first["cancellation_id"]
    assert first["history"][0]["actor"] == "customer:cust-1"


async def test_routes_by_id_address_any_cancellation_of_the_order(shop):
    """After a rejection a new request starts; the first stays readable by its id."""
    order_id = await shop.put_order()
    first = await shop.request_cancellation(order_id)
    rejected = await shop.http.post(
        shop.cancellation_path(order_id, "/reject"), json={"reason": "already packed"}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    second = await shop.request_cancellation(order_id)
    assert second["cancellation_id"] != first["cancellation_id"]

    by_id = f"{shop.base}/cancellations/{first['cancellation_id']}"
    old = await shop.http.get(by_id)
    assert old.status_code == 200
    assert old.json()["status"] == "rejected"
    latest = await shop.view(order_id)
    assert latest["cancellation_id"] == second["cancellation_id"]
    listed = await shop.http.get(shop.order_path(order_id, "/cancellations"))
    assert [v["cancellation_id"] for v in listed.json()["items"]] == [
        second["cancellation_id"],
        first["cancellation_id"],
    ]
    assert listed.json()["next_cursor"] is None
    quote = await shop.http.post(
        f"{shop.base}/cancellations/{second['cancellation_id']}/quote", json={}
    )
    assert quote.status_code == 200
    assert quote.json()["refundable"] == 30000

    # Acting on the old one by id is a conflict; on the new one by id it works.
    late = await shop.http.post(f"{by_id}/accept", json=ACCEPT)
    assert late.status_code == 409 and _error(late) == "invalid_transition"
    withdrawn = await shop.http.post(
        f"{shop.base}/cancellations/{second['cancellation_id']}/withdraw"
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"
    assert withdrawn.json()["history"][-1]["actor"] == "customer"


async def test_the_shops_list_filters_by_status_and_pages_with_a_cursor(shop):
    orders = [await shop.put_order() for _ in range(3)]
    for order_id in orders:
        await shop.request_cancellation(order_id)
    await shop.http.post(shop.cancellation_path(orders[0], "/reject"), json={"reason": "no"})

    page = await shop.http.get(f"{shop.base}/cancellations", params={"limit": 2})
    assert page.status_code == 200
    first = page.json()
    assert [v["order_id"] for v in first["items"]] == [orders[2], orders[1]]
    assert first["next_cursor"]
    rest = await shop.http.get(
        f"{shop.base}/cancellations", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [v["order_id"] for v in rest.json()["items"]] == [orders[0]]
    assert rest.json()["next_cursor"] is None

    requested = await shop.http.get(f"{shop.base}/cancellations", params={"status": "requested"})
    assert {v["order_id"] for v in requested.json()["items"]} == {orders[1], orders[2]}
    both = await shop.http.get(
        f"{shop.base}/cancellations", params=[("status", "requested"), ("status", "rejected")]
    )
    assert len(both.json()["items"]) == 3
    assert re.fullmatch(r"[A-Za-z0-9_=-]+", first["next_cursor"])
    for cursor in ["not base64!", "%%%", "w4"]:
        garbage = await shop.http.get(f"{shop.base}/cancellations", params={"cursor": cursor})
        assert garbage.status_code == 422, cursor
    bad = await shop.http.get(f"{shop.base}/cancellations", params={"status": "lost"})
    assert bad.status_code == 422 and _error(bad) == "validation_error"
    for raw in [b"yesterday", b"0001-01-01T00:00:00+14:00|x", b"2020-01-01T00:00:00+00:00|\x00"]:
        cursor = base64.urlsafe_b64encode(raw).decode()
        bad_cursor = await shop.http.get(f"{shop.base}/cancellations", params={"cursor": cursor})
        assert bad_cursor.status_code == 422, cursor
        assert _error(bad_cursor) == "validation_error"


async def test_a_quote_shows_the_refund_plan_and_changes_nothing(shop):
    order_id = await shop.put_order(
        tenders=[
            {"tender_id": "t1", "kind": "points", "amount": 5000},
            {"tender_id": "t2", "kind": "bank_transfer", "amount": 25000},
        ]
    )
    quote = await shop.http.post(
        shop.cancellation_path(order_id, "/quote"), json={"refund_method": "credits"}
    )
    assert quote.status_code == 200, quote.text
    assert quote.json() == {
        "refundable": 30000,
        "currency": "KRW",
        "lines": [
            {"tender_id": "t1", "tender_kind": "points", "method": "original", "amount": 5000},
            {
                "tender_id": "t2",
                "tender_kind": "bank_transfer",
                "method": "credits",
                "amount": 25000,
            },
        ],
    }
    assert (await shop.http.get(shop.order_path(order_id))).json()["status"] == "paid"
    missing = await shop.http.get(shop.cancellation_path(order_id))
    assert missing.status_code == 404 and _error(missing) == "cancellation_not_found"
    partial = await shop.http.post(
        shop.cancellation_path(order_id, "/quote"),
        json={"items": [{"item_id": "i1", "quantity": 1}]},
    )
    assert partial.status_code == 200, partial.text
    assert partial.json()["refundable"] == 10000
    too_many = await shop.http.post(
        shop.cancellation_path(order_id, "/quote"),
        json={"items": [{"item_id": "i1", "quantity": 3}]},
    )
    assert too_many.status_code == 422 and _error(too_many) == "validation_error"


class TestRefusals:
    """Each refusal the foundation can produce, with its code and status."""

    async def test_unknown_order_is_order_not_found(self, shop):
        for answer in [
            await shop.http.get(shop.order_path("nope")),
            await shop.http.get(shop.cancellation_path("nope")),
            await shop.http.post(
                shop.cancellation_path("nope"),
                json={"initiated_by": "customer", "channel": "my_account"},
            ),
            await shop.http.post(shop.cancellation_path("nope", "/accept"), json=ACCEPT),
            await shop.http.post(
                shop.order_path("nope", "/fulfillment"), json={"status": "preparing"}
            ),
        ]:
            assert answer.status_code == 404, answer.text
            assert _error(answer) == "order_not_found"

    async def test_unknown_cancellation_is_cancellation_not_found(self, shop):
        order_id = await shop.put_order()
        for answer in [
            await shop.http.get(shop.cancellation_path(order_id)),
            await shop.http.post(shop.cancellation_path(order_id, "/reject"), json={"reason": "x"}),
            await shop.http.get(f"{shop.base}/cancellations/cancellation~{shop.shop_id}~x~1"),
            await shop.http.post(f"{shop.base}/cancellations/cancellation-x-1/withdraw"),
        ]:
            assert answer.status_code == 404, answer.text
            assert _error(answer) == "cancellation_not_found"

    async def test_unknown_refund_is_refund_not_found(self, shop):
        order_id, _ = await _bank_transfer_awaiting_confirmation(shop)
        answer = await shop.http.post(
            shop.cancellation_path(order_id, "/refunds/r-nope/confirm"), json={"reference": "x"}
        )
        assert answer.status_code == 404 and _error(answer) == "refund_not_found"

    async def test_a_shipped_order_is_a_return_not_a_cancellation(self, shop):
        shipped = await shop.put_order(status="in_transit")
        answer = await shop.http.post(
            shop.cancellation_path(shipped),
            json={"initiated_by": "customer", "channel": "my_account"},
        )
        assert answer.status_code == 409 and _error(answer) == "order_shipped"
        assert "return" in answer.json()["error"]["message"]

    async def test_acceptance_after_shipment_is_order_shipped(self, shop):
        order_id = await shop.put_order()
        await shop.request_cancellation(order_id)
        fulfilled = await shop.http.post(
            shop.order_path(order_id, "/fulfillment"), json={"status": "in_transit"}
        )
        assert fulfilled.status_code == 200, fulfilled.text
        answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
        assert answer.status_code == 409 and _error(answer) == "order_shipped"
        assert (await shop.view(order_id))["status"] == "requested"

    async def test_customer_requests_off_is_customer_requests_disabled(self, shop):
        await shop.http.put(f"{shop.base}/settings", json={"customer_cancellation_requests": False})
        order_id = await shop.put_order()
        answer = await shop.http.post(
            shop.cancellation_path(order_id),
            json={"initiated_by": "customer", "channel": "my_account"},
        )
        assert answer.status_code == 409 and _error(answer) == "customer_requests_disabled"
        contact = await shop.http.post(
            shop.cancellation_path(order_id),
            json={
                "initiated_by": "merchant",
                "channel": "contact",
                "reason_code": "customer_contact",
                "accept": {"reason_code": "customer_contact", "reason": "phoned"},
            },
        )
        assert contact.status_code == 201, contact.text

    async def test_an_action_not_allowed_now_is_invalid_transition(self, shop):
        order_id = await shop.put_order()
        await shop.request_cancellation(order_id)
        await shop.http.post(shop.cancellation_path(order_id, "/reject"), json={"reason": "no"})
        answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
        assert answer.status_code == 409 and _error(answer) == "invalid_transition"

    @pytest.mark.parametrize(
        "body",
        [
            {"initiated_by": "customer", "channel": "contact"},
            {"initiated_by": "merchant", "channel": "admin"},
            {
                "initiated_by": "customer",
                "channel": "my_account",
                "items": [{"item_id": "i1", "quantity": 3}],
            },
            {"initiated_by": "customer", "channel": "my_account", "accept": ACCEPT},
        ],
        ids=[
            "customer-by-contact",
            "merchant-without-accept",
            "too-many-items",
            "customer-with-accept",
        ],
    )
    async def test_an_inconsistent_start_is_validation_error(self, shop, body):
        order_id = await shop.put_order()
        answer = await shop.http.post(shop.cancellation_path(order_id), json=body)
        assert answer.status_code == 422 and _error(answer) == "validation_error"
        assert (await shop.http.get(shop.cancellation_path(order_id))).status_code == 404


async def test_undo_over_http_recaptures_and_restores_the_order(shop):
    """Undo: the provider's check first, then recapture; the order is paid again."""
    order_id = await shop.put_order()
    await shop.request_cancellation(order_id)
    answer = await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    assert answer.status_code == 200, answer.text
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")

    undone = await shop.http.post(
        shop.cancellation_path(order_id, "/undo"),
        json={"reason": "customer wants it after all"},
        headers={"Idempotency-Key": "undo-once"},
    )
    assert undone.status_code == 200, undone.text
    assert undone.json()["status"] == "undone"
    again = await shop.http.post(
        shop.cancellation_path(order_id, "/undo"),
        json={"reason": "customer wants it after all"},
        headers={"Idempotency-Key": "undo-once"},
    )
    assert again.status_code == 200 and again.json()["status"] == "undone"
    order = (await shop.http.get(shop.order_path(order_id))).json()
    assert order["status"] == "paid"
    payment = await shop.payment(order["tenders"][0]["payment_id"])
    assert [e["type"] for e in payment["ledger"]].count("recapture") == 1


async def test_repayment_over_http_completes_an_undo_that_needs_it(shop):
    payment = await shop.card_payment(30000, recapture="not_possible")
    order_id = await shop.put_order(
        tenders=[{"tender_id": "t1", "kind": "card", "amount": 30000, "payment_id": payment}]
    )
    await shop.request_cancellation(order_id)
    await shop.http.post(shop.cancellation_path(order_id, "/accept"), json=ACCEPT)
    await shop.wait_for(order_id, lambda v: v["status"] == "canceled")

    refused = await shop.http.post(shop.cancellation_path(order_id, "/undo"), json={"reason": "r"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "recapture_unavailable"
    waiting = await shop.http.post(
        shop.cancellation_path(order_id, "/undo"), json={"reason": "r", "require_repayment": True}
    )
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["status"] == "awaiting_repayment"
    assert waiting.json()["repayment_due"] == {"amount": 30000, "currency": "KRW"}
    paid = await shop.http.post(
        shop.cancellation_path(order_id, "/repayment"), json={"reference": "R-1", "amount": 30000}
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "undone"


async def test_card_points_credits_order_canceled_in_three_steps_reconciles_after_each(shop):
    """Rule 10 through the hook: each step's share per tender, the sandbox ledger and the
    customer's balances checked after every step; shipping only with the last items."""
    customer = f"cust-{shop.shop_id[-6:]}"
    put = await shop.http.put(
        f"/v1/shops/{shop.shop_id}/customers/{customer}", json={"points": 0, "credits": 0}
    )
    assert put.status_code == 200, put.text
    payment = await shop.card_payment(18000)
    order_id = await shop.put_order(
        customer_id=customer,
        tenders=[
            {"tender_id": "card", "kind": "card", "amount": 18000, "payment_id": payment},
            {"tender_id": "pts", "kind": "points", "amount": 6000},
            {"tender_id": "crd", "kind": "credits", "amount": 6000},
        ],
    )
    merchant = {
        "initiated_by": "merchant",
        "channel": "admin",
        "reason_code": "sold_out",
        "accept": {"reason_code": "sold_out"},
    }
    steps = [
        ([{"item_id": "i1", "quantity": 1}], 10000, {"card": 6000, "pts": 2000, "crd": 2000}),
        ([{"item_id": "i2", "quantity": 1}], 7000, {"card": 4200, "pts": 1400, "crd": 1400}),
        (None, 13000, {"card": 7800, "pts": 2600, "crd": 2600}),
    ]
    refunded = {"card": 0, "pts": 0, "crd": 0}
    for n, (items, amount, lines) in enumerate(steps, start=1):
        quote = await shop.http.post(
            shop.cancellation_path(order_id, "/quote"), json={"items": items}
        )
        assert quote.status_code == 200, quote.text
        assert quote.json()["refundable"] == amount
        answer = await shop.http.post(
            shop.cancellation_path(order_id), json=merchant | {"items": items}
        )
        assert answer.status_code == 201, answer.text
        final = await shop.wait_for(
            order_id,
            lambda v, n=n: v["cancellation_id"].endswith(f"~{n}") and v["status"] == "canceled",
        )
        assert final["refundable"]["amount"] == amount
        assert {r["tender_id"]: r["amount"] for r in final["refunds"]} == lines
        for tender, value in lines.items():
            refunded[tender] += value
        ledger = (await shop.payment(payment))["ledger"]
        assert sum(e["amount"] for e in ledger if e["type"] == "refund") == refunded["card"]
        balances = (await shop.http.get(f"/v1/shops/{shop.shop_id}/customers/{customer}")).json()
        assert balances == {
            "points": refunded["pts"],
            "credits": refunded["crd"],
            "currency": "KRW",
        }
        order = (await shop.http.get(shop.order_path(order_id))).json()
        assert order["status"] == ("canceled" if n == 3 else "paid")
    assert refunded == {"card": 18000, "pts": 6000, "crd": 6000}
