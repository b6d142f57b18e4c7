"""Refunds per tender and method: provider refunds and voids, bank deposits, balances,
failures and retries (rules 6 to 8)."""

import asyncio
import base64

import pytest

from domain.bank import BankAccount
from domain.cancellation import Attention, CancellationStatus, RefundStatus
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus, TenderKind
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    RetryRefundRequest,
    StartRequest,
)
from workflows.search_attributes import NEEDS_ATTENTION

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")
ACCOUNT = BankAccount(bank="Shinhan", account_number="110-123-456789", holder="Kim Minji")


async def _accepted(h, accept: AcceptRequest | None = None, **order):
    order_id = await h.order(**order)
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await h.client.accept(h.shop_id, order_id, accept or AcceptRequest(reason_code="changed_mind"))
    return order_id, view.cancellation_id


async def test_authorized_card_is_voided_not_refunded(h):
    order_id, cid = await _accepted(h, card_behavior={"capture": False})
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    entries = await h.refunds_in_ledger(order_id)
    assert [(e["type"], e["amount"]) for e in entries] == [("void", 30000)]
    assert final.refunds[0].provider_reference.startswith("void:")


async def test_bank_transfer_waits_for_the_merchants_deposit(h):
    """A bank transfer goes back by bank deposit, confirmed with a transfer reference."""
    order_id, cid = await _accepted(
        h,
        AcceptRequest(reason_code="changed_mind", bank_account=ACCOUNT),
        tenders=[(TenderKind.BANK_TRANSFER, 30000)],
    )
    view = await h.wait_for(cid, lambda v: v.refunds)
    line = view.refunds[0]
    assert line.status is RefundStatus.AWAITING_CONFIRMATION
    assert line.bank_account.masked_number == "**********6789"
    assert view.allowed_actions == ["confirm_refund", "undo"]
    assert view.status is CancellationStatus.IN_PROGRESS
    # Operators find these runs with NeedsAttention = "awaiting_bank_deposit".
    assert view.needs_attention is Attention.AWAITING_BANK_DEPOSIT
    attrs = (await h.handle(view.cancellation_id).describe()).typed_search_attributes
    assert attrs.get(NEEDS_ATTENTION) == "awaiting_bank_deposit"

    confirmed = await h.client.confirm_refund(
        h.shop_id, order_id, line.refund_id, ConfirmRefundRequest(reference="TX-981")
    )
    assert confirmed.refunds[0].status is RefundStatus.SUCCEEDED
    assert confirmed.needs_attention is None
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert final.refunds[0].confirmation_reference == "TX-981"
    assert await h.order_status(order_id) is OrderStatus.CANCELED


async def test_bank_deposit_needs_a_bank_account_and_changes_nothing_without(h):
    order_id = await h.order(tenders=[(TenderKind.BANK_TRANSFER, 30000)])
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    with pytest.raises(CancellationError) as info:
        await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    assert "bank_account" in info.value.message
    assert (await h.view(view.cancellation_id)).status is CancellationStatus.REQUESTED
    assert await h.order_status(order_id) is OrderStatus.CANCELLATION_REQUESTED


async def test_bank_account_number_never_reaches_the_workflow_history(h):
    """Personal data stays in the store database; history carries a reference."""
    _order_id, cid = await _accepted(
        h,
        AcceptRequest(
            reason_code="changed_mind", refund_method="bank_deposit", bank_account=ACCOUNT
        ),
    )
    await h.wait_for(cid, lambda v: v.refunds)
    history = await h.handle(cid).fetch_history()
    raw = _decoded_payloads(history.to_json_dict())
    assert "110-123-456789" not in raw
    assert "Kim Minji" not in raw
    assert "6789" in raw  # the masked number is there, so the search looked in the right place


def _decoded_payloads(node) -> str:
    """Every payload's bytes in the history, decoded, joined into one text to search."""
    found: list[str] = []

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "data" and isinstance(item, str):
                    found.append(base64.b64decode(item).decode(errors="replace"))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(node)
    return "\n".join(found)


async def test_card_refund_as_store_credit(h):
    """The merchant may give store credit instead of money back."""
    order_id, cid = await _accepted(
        h, AcceptRequest(reason_code="changed_mind", refund_method="credits")
    )
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert final.refunds[0].method == "credits"
    assert await h.refunds_in_ledger(order_id) == []
    assert await h.balances() == (0, 30000)


async def test_points_and_credits_only_order_is_canceled_at_once(h):
    """Rule 8: no money to move; balances go back at acceptance."""
    await h.store.put_balances(h.shop_id, "cust-1", 100, 200)
    _order_id, cid = await _accepted(
        h, tenders=[(TenderKind.POINTS, 10000), (TenderKind.CREDITS, 20000)]
    )
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert {(r.tender_kind, r.amount, r.status) for r in final.refunds} == {
        (TenderKind.POINTS, 10000, RefundStatus.SUCCEEDED),
        (TenderKind.CREDITS, 20000, RefundStatus.SUCCEEDED),
    }
    assert await h.balances() == (10100, 20200)


async def test_zero_order_is_canceled_at_once(h):
    _order_id, cid = await _accepted(h, items=[("sku-gift", 1, 0)], shipping_fee=0, tenders=[])
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert final.refunds == [] and final.refundable.amount == 0


async def test_mixed_tenders_each_go_back_to_their_source(h):
    await h.store.put_balances(h.shop_id, "cust-1", 0, 0)
    order_id, cid = await _accepted(
        h, tenders=[(TenderKind.CARD, 25000), (TenderKind.POINTS, 5000)]
    )
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert final.refunded.amount == 30000
    assert [(e["type"], e["amount"]) for e in await h.refunds_in_ledger(order_id)] == [
        ("refund", 25000)
    ]
    assert await h.balances() == (5000, 0)


async def test_declined_refund_needs_attention_then_store_credit_completes(h):
    """Rule 7: a refund failing for good is flagged; switching it to credits completes."""
    order_id, cid = await _accepted(h, card_behavior={"refund": "decline"})
    failed = await h.wait_for(cid, lambda v: v.refunds and v.refunds[0].status == "failed")
    assert failed.needs_attention is Attention.REFUND_FAILED
    assert failed.allowed_actions == ["retry_refund", "undo"]
    assert "refund_declined" in failed.refunds[0].failure
    assert ("merchant", "refund_failed") in await h.outbox()
    description = await h.handle(cid).describe()
    assert description.typed_search_attributes.get(NEEDS_ATTENTION) == "refund_failed"

    view = await h.client.retry_refund(
        h.shop_id, order_id, failed.refunds[0].refund_id, RetryRefundRequest(method="credits")
    )
    assert view.needs_attention is None
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert final.refunds[0].method == "credits"
    assert await h.balances() == (0, 30000)
    assert await h.refunds_in_ledger(order_id) == []


async def test_declined_refund_retried_as_is_fails_again_then_goes_by_bank(h):
    order_id, cid = await _accepted(h, card_behavior={"refund": "decline"})
    failed = await h.wait_for(cid, lambda v: v.refunds and v.refunds[0].status == "failed")
    refund_id = failed.refunds[0].refund_id
    await h.client.retry_refund(h.shop_id, order_id, refund_id, RetryRefundRequest())
    again = await h.wait_for(
        cid, lambda v: v.refunds[0].status == "failed" and v.refunds[0].attempts == 2
    )
    assert again.needs_attention is Attention.REFUND_FAILED
    with pytest.raises(CancellationError) as info:
        await h.client.retry_refund(
            h.shop_id, order_id, refund_id, RetryRefundRequest(method="bank_deposit")
        )
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    await h.client.retry_refund(
        h.shop_id,
        order_id,
        refund_id,
        RetryRefundRequest(method="bank_deposit", bank_account=ACCOUNT),
    )
    await h.client.confirm_refund(
        h.shop_id, order_id, refund_id, ConfirmRefundRequest(reference="TX-1")
    )
    final = await h.wait_status(cid, CancellationStatus.CANCELED)
    assert final.refunds[0].method == "bank_deposit"


async def test_retry_as_is_after_failing_again_is_a_new_attempt(h):
    """Reliability finding 5: the same "retry as is" a second time, once the line failed
    again, makes a third attempt (it used to answer as a repeat and do nothing)."""
    order_id, cid = await _accepted(h, card_behavior={"refund": "decline"})
    failed = await h.wait_for(cid, lambda v: v.refunds and v.refunds[0].status == "failed")
    refund_id = failed.refunds[0].refund_id
    for attempt in (2, 3):
        await h.client.retry_refund(h.shop_id, order_id, refund_id, RetryRefundRequest())
        await h.wait_for(
            cid, lambda v, n=attempt: v.refunds[0].status == "failed" and v.refunds[0].attempts == n
        )
    events = [e["event"] for e in await h.store.events(cid)]
    assert events.count("refund_retried") == 2
    assert events.count("refund_failed") == 3
    assert await h.refunds_in_ledger(order_id) == []  # declined: nothing ever moved


async def test_pending_refund_is_processing_until_it_settles(h):
    order_id, cid = await _accepted(
        h, card_behavior={"refund": "pending", "settle_after_seconds": 1}
    )
    processing = await h.wait_refund_at_provider(cid)
    assert processing.refunds[0].status is RefundStatus.PROCESSING
    assert processing.status is CancellationStatus.IN_PROGRESS
    final = await h.wait_status(cid, CancellationStatus.CANCELED, within=30)
    assert final.refunds[0].status is RefundStatus.SUCCEEDED
    assert [(e["type"], e["amount"]) for e in await h.refunds_in_ledger(order_id)] == [
        ("refund", 30000)
    ]


async def test_refund_retried_after_provider_applied_it_pays_once(h):
    """The provider refunds, then answers 503; the retry with the same key pays nothing more."""
    order_id = await h.order()
    payment_id = (await h.store.get_order(h.shop_id, order_id)).tenders[0].payment_id
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await h.provider._http.put("/v1/faults", json={"error_after_effect_rate": 1.0})
    try:
        await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
        deadline = asyncio.get_running_loop().time() + 20
        while not [e for e in await h.ledger(payment_id) if e["type"] == "refund"]:
            assert asyncio.get_running_loop().time() < deadline, "the refund never applied"
            await asyncio.sleep(0.1)
        # The activity has now failed at least once after the effect; let it retry.
        assert (await h.view(view.cancellation_id)).status is CancellationStatus.IN_PROGRESS
    finally:
        await h.provider._http.put("/v1/faults", json={})
    final = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED, within=30)
    refunds = [e for e in await h.ledger(payment_id) if e["type"] == "refund"]
    assert [(e["amount"], e["idempotency_key"]) for e in refunds] == [
        (30000, f"{view.cancellation_id}-r1/try-1")
    ]
    assert final.refunded.amount == 30000


async def test_provider_webhook_settles_a_pending_refund_without_waiting_for_the_poll(h):
    """The hook turns the provider's webhook into a signal; the run completes at once."""
    _order_id, cid = await _accepted(
        h, card_behavior={"refund": "pending", "settle_after_seconds": 3600}
    )
    pending = await h.wait_refund_at_provider(cid)
    reference = pending.refunds[0].provider_reference
    await h.handle(cid).signal(
        "provider_refund_settled", {"provider_reference": "re_unknown", "status": "succeeded"}
    )
    await asyncio.sleep(0.3)
    assert (await h.view(cid)).status is CancellationStatus.IN_PROGRESS
    await h.handle(cid).signal(
        "provider_refund_settled", {"provider_reference": reference, "status": "succeeded"}
    )
    final = await h.wait_status(cid, CancellationStatus.CANCELED, within=10)
    assert final.refunds[0].provider_reference == reference
