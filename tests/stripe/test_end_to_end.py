"""The seed's card flows through the whole product with ``PAYMENT_PROVIDER=stripe``.

The hook and the worker are wired by the production code (``open_hook``,
``worker.activity_dependencies``) from Stripe settings; Stripe is localstripe, a real
process. Orders are paid with PaymentIntents made with Stripe's test card.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

pytestmark = [pytest.mark.integration]

ACCEPT = {"reason_code": "changed_mind", "reason": "customer asked", "refund_method": "original"}
ITEMS = [
    {"item_id": "i1", "sku": "sku-mug", "quantity": 2, "unit_price": 10000},
    {"item_id": "i2", "sku": "sku-tee", "quantity": 1, "unit_price": 7000},
]
TOTAL = 30000  # the items and a shipping fee of 3000


def _path(stack: Any, order_id: str, suffix: str = "") -> str:
    return f"/v1/shops/{stack.shop_id}/orders/{order_id}{suffix}"


def _document(payment_id: str) -> dict[str, Any]:
    """A paid order of :data:`ITEMS` and a 3,000 shipping fee, one card tender naming
    ``payment_id``."""
    return {
        "customer_id": "cust-1",
        "currency": "KRW",
        "status": "paid",
        "shipping_fee": 3000,
        "items": ITEMS,
        "tenders": [{"tender_id": "t1", "kind": "card", "amount": TOTAL, "payment_id": payment_id}],
    }


async def _order_paid_by(stack: Any, *, capture: bool = True) -> tuple[str, str]:
    """An order paid by one card tender, a new PaymentIntent; ``(order id, PaymentIntent)``."""
    payment = await stack.stripe.create_payment(TOTAL, "KRW", capture=capture)
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    answer = await stack.http.put(
        _path(stack, order_id),
        json=_document(payment["id"]),
    )
    assert answer.status_code == 201, answer.text
    return order_id, payment["id"]


async def _wait_for(
    stack: Any, order_id: str, status: str, run: int | None = None
) -> dict[str, Any]:
    """The order's latest cancellation once it is ``status`` (and, given ``run``, once it is
    the order's ``run``-th cancellation)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        view: dict[str, Any] = (
            await stack.http.get(_path(stack, order_id, "/cancellation"))
        ).json()
        if view.get("status") == status and (
            run is None or view.get("cancellation_id", "").endswith(f"~{run}")
        ):
            return view
        if asyncio.get_running_loop().time() > deadline:
            which = "" if run is None else f"cancellation {run} "
            raise AssertionError(f"{which}not {status} within 30 s: {view}")
        await asyncio.sleep(0.1)


async def _request_and_accept(stack: Any, order_id: str) -> None:
    requested = await stack.http.post(
        _path(stack, order_id, "/cancellation"),
        json={"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"},
    )
    assert requested.status_code == 201, requested.text
    accepted = await stack.http.post(_path(stack, order_id, "/cancellation/accept"), json=ACCEPT)
    assert accepted.status_code == 200, accepted.text


async def test_customer_request_accepted_is_refunded_on_stripe(stripe_stack):
    """Request → accept → a Stripe refund of the whole PaymentIntent → order canceled."""
    order_id, payment_id = await _order_paid_by(stripe_stack)

    await _request_and_accept(stripe_stack, order_id)
    final = await _wait_for(stripe_stack, order_id, "canceled")

    assert final["refunded"] == {"amount": TOTAL, "currency": "KRW"}
    [refund] = final["refunds"]
    assert refund["status"] == "succeeded"
    assert refund["provider_reference"].startswith("re_")
    payment = await stripe_stack.stripe.get_payment(payment_id)
    assert (payment["status"], payment["refunded_amount"]) == ("refunded", TOTAL)
    [made] = await stripe_stack.stripe.list_refunds(payment_id)
    assert made["id"] == refund["provider_reference"]


async def test_authorized_only_payment_intent_is_canceled(stripe_stack):
    """An uncaptured PaymentIntent is released by canceling it: nothing was taken."""
    order_id, payment_id = await _order_paid_by(stripe_stack, capture=False)

    await _request_and_accept(stripe_stack, order_id)
    final = await _wait_for(stripe_stack, order_id, "canceled")

    assert final["refunds"][0]["provider_reference"] == f"void:{payment_id}"
    payment = await stripe_stack.stripe.get_payment(payment_id)
    assert (payment["status"], payment["provider_status"]) == ("voided", "canceled")


async def test_a_payment_intent_in_another_currency_is_refused_at_put(stripe_stack):
    """The card tender check reads the PaymentIntent through the adapter: USD ≠ KRW."""
    payment = await stripe_stack.stripe.create_payment(TOTAL, "USD")
    answer = await stripe_stack.http.put(
        _path(stripe_stack, f"o-{uuid.uuid4().hex[:8]}"),
        json=_document(payment["id"]),
    )

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "payment_mismatch"


async def test_an_unknown_payment_intent_is_refused_at_put(stripe_stack):
    answer = await stripe_stack.http.put(
        _path(stripe_stack, f"o-{uuid.uuid4().hex[:8]}"),
        json=_document("pi_missing"),
    )

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "payment_mismatch"


async def test_partial_refunds_in_three_steps_add_up_on_stripe(stripe_stack):
    """Merchant cancels item by item: three Stripe refunds, the last with the shipping fee."""
    order_id, payment_id = await _order_paid_by(stripe_stack)
    merchant = {
        "initiated_by": "merchant",
        "channel": "admin",
        "reason_code": "sold_out",
        "accept": {"reason_code": "sold_out"},
    }
    steps = [
        ([{"item_id": "i1", "quantity": 1}], 10000),
        ([{"item_id": "i1", "quantity": 1}], 10000),
        (None, 10000),
    ]
    for n, (items, amount) in enumerate(steps, start=1):
        answer = await stripe_stack.http.post(
            _path(stripe_stack, order_id, "/cancellation"), json=merchant | {"items": items}
        )
        assert answer.status_code == 201, answer.text
        final = await _wait_for(stripe_stack, order_id, "canceled", run=n)
        assert [r["amount"] for r in final["refunds"]] == [amount]

    refunds = await stripe_stack.stripe.list_refunds(payment_id)
    assert sorted(r["amount"] for r in refunds) == [10000, 10000, 10000]
    payment = await stripe_stack.stripe.get_payment(payment_id)
    assert (payment["status"], payment["refunded_amount"]) == ("refunded", TOTAL)


async def test_undo_on_stripe_takes_the_repayment_path(stripe_stack):
    """Stripe can't restore a refunded payment: undo is refused until it asks for repayment."""
    order_id, _ = await _order_paid_by(stripe_stack)
    await _request_and_accept(stripe_stack, order_id)
    await _wait_for(stripe_stack, order_id, "canceled")
    undo = _path(stripe_stack, order_id, "/cancellation/undo")

    refused = await stripe_stack.http.post(undo, json={"reason": "customer wants it back"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "recapture_unavailable"
    waiting = await stripe_stack.http.post(
        undo, json={"reason": "customer wants it back", "require_repayment": True}
    )
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["status"] == "awaiting_repayment"
    assert waiting.json()["repayment_due"] == {"amount": TOTAL, "currency": "KRW"}
    paid = await stripe_stack.http.post(
        _path(stripe_stack, order_id, "/cancellation/repayment"),
        json={"reference": "new-pi", "amount": TOTAL},
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "undone"


async def test_partial_cancellation_of_an_authorized_payment_captures_the_rest(stripe_stack):
    """Cancel one 10000 item of a 30000 authorization: Stripe captures 20000, releases 10000."""
    order_id, payment_id = await _order_paid_by(stripe_stack, capture=False)
    answer = await stripe_stack.http.post(
        _path(stripe_stack, order_id, "/cancellation"),
        json={
            "initiated_by": "merchant",
            "channel": "admin",
            "reason_code": "sold_out",
            "accept": {"reason_code": "sold_out"},
            "items": [{"item_id": "i1", "quantity": 1}],
        },
    )
    assert answer.status_code == 201, answer.text

    final = await _wait_for_outcome(stripe_stack, order_id)

    assert final["status"] == "canceled", final["refunds"]
    payment = await stripe_stack.stripe.get_payment(payment_id)
    assert payment["refundable_amount"] == TOTAL - 10000


async def _wait_for_outcome(stack: Any, order_id: str) -> dict[str, Any]:
    """The cancellation once it is canceled or one of its refunds failed."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        view: dict[str, Any] = (
            await stack.http.get(_path(stack, order_id, "/cancellation"))
        ).json()
        if view.get("status") == "canceled" or any(
            r["status"] == "failed" for r in view.get("refunds", [])
        ):
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no outcome within 30 s: {view}")
        await asyncio.sleep(0.1)
