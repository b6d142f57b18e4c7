"""What operators see: search attributes, summaries and current details (dev server)."""

import asyncio

import pytest

from domain.bank import BankAccount
from domain.cancellation import CancellationStatus
from domain.order import TenderKind
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    RepaymentRequest,
    StartRequest,
    UndoRequest,
)
from workflows.search_attributes import (
    CANCELLATION_STATUS,
    INITIATED_BY,
    NEEDS_ATTENTION,
    ORDER_ID,
    REFUND_AMOUNT,
    SHOP_ID,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")


async def _ids(h, query: str, expected: int) -> list[str]:
    """Visibility is eventually consistent: poll until the list has settled."""
    ids: list[str] = []
    for _ in range(100):
        ids = [w.id async for w in h.temporal.list_workflows(query)]
        if len(ids) == expected:
            return ids
        await asyncio.sleep(0.1)
    return ids


async def test_search_attributes_follow_each_transition(h):
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    handle = h.handle(view.cancellation_id)
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(SHOP_ID) == h.shop_id
    assert attrs.get(ORDER_ID) == order_id
    assert attrs.get(CANCELLATION_STATUS) == "requested"
    assert attrs.get(INITIATED_BY) == "customer"
    assert attrs.get(NEEDS_ATTENTION) == "none"
    assert attrs.get(REFUND_AMOUNT) == 0
    assert await _ids(h, f"ShopId = '{h.shop_id}' AND CancellationStatus = 'requested'", 1) == [
        view.cancellation_id
    ]

    await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(CANCELLATION_STATUS) == "canceled"
    assert attrs.get(REFUND_AMOUNT) == 30000
    assert await _ids(h, f"ShopId = '{h.shop_id}' AND CancellationStatus = 'requested'", 0) == []
    assert await _ids(
        h, f"ShopId = '{h.shop_id}' AND CancellationStatus = 'canceled' AND RefundAmount > 0", 1
    ) == [view.cancellation_id]


async def test_runs_carry_a_summary_and_say_what_they_wait_for(h):
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    handle = h.handle(view.cancellation_id)
    description = await handle.describe()
    assert await description.static_summary() == (
        f"Customer request: order {order_id} of shop {h.shop_id} (KRW)"
    )
    assert "Started by: customer:cust-1 via my_account" in await description.static_details()
    details = await _current_details(handle)
    assert details.startswith("Waiting for the merchant to accept or reject")

    await h.client.accept(h.shop_id, order_id, AcceptRequest(reason_code="changed_mind"))
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert (await _current_details(handle)).startswith("Canceled and fully refunded; undo")


async def _current_details(handle) -> str:
    """The current details the Web UI shows (read through the __temporal_workflow_metadata
    query, which is what the UI calls)."""
    metadata = await handle.query("__temporal_workflow_metadata")
    return str(metadata.current_details)


async def test_each_search_attribute_finds_the_run_after_each_transition(h):
    """A list query by every attribute returns the run at every step of its life."""
    order_id = await h.order(tenders=[(TenderKind.BANK_TRANSFER, 30000)])
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    cid = view.cancellation_id
    mine = f"ShopId = '{h.shop_id}'"

    async def finds(*conditions: str) -> None:
        query = " AND ".join([mine, *conditions])
        assert await _ids(h, query, 1) == [cid], query

    await finds(f"OrderId = '{order_id}'", "InitiatedBy = 'customer'")
    await finds("CancellationStatus = 'requested'", "NeedsAttention = 'none'")

    account = BankAccount(bank="KB", account_number="110-123-456789", holder="Ana")
    await h.client.accept(
        h.shop_id, order_id, AcceptRequest(reason_code="changed_mind", bank_account=account)
    )
    await finds("CancellationStatus = 'in_progress'", "NeedsAttention = 'awaiting_bank_deposit'")
    await finds("RefundAmount = 0")

    refund_id = (await h.view(cid)).refunds[0].refund_id
    await h.client.confirm_refund(
        h.shop_id, order_id, refund_id, ConfirmRefundRequest(reference="TX-1")
    )
    await h.wait_status(cid, CancellationStatus.CANCELED)
    await finds("CancellationStatus = 'canceled'", "NeedsAttention = 'none'")
    await finds("RefundAmount = 30000")

    await h.client.undo(h.shop_id, order_id, UndoRequest(reason="kept"))
    await finds("CancellationStatus = 'awaiting_repayment'")
    await h.client.confirm_repayment(
        h.shop_id, order_id, RepaymentRequest(reference="R-1", amount=30000)
    )
    await finds("CancellationStatus = 'undone'")
