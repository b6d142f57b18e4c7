"""The merchant's decision: accept, reject, withdraw, and what is refused when."""

import uuid

import pytest

from domain.cancellation import Action, CancellationStatus
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    RejectRequest,
    RepaymentRequest,
    StartRequest,
    UndoRequest,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")
ACCEPT = AcceptRequest(reason_code="changed_mind", reason="customer asked")


async def _refused(coro, code: ErrorCode) -> CancellationError:
    with pytest.raises(CancellationError) as info:
        await coro
    assert info.value.code is code, info.value
    return info.value


async def _requested(h, **order):
    order_id = await h.order(**order)
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    return order_id, view


async def test_reject_restores_the_order_and_tells_the_customer(h):
    order_id, view = await _requested(h, status=OrderStatus.PREPARING)
    rejected = await h.client.reject(
        h.shop_id, order_id, RejectRequest(reason="already packed", customer_note="sorry")
    )
    assert rejected.status is CancellationStatus.REJECTED
    assert rejected.order_status is OrderStatus.PREPARING
    assert rejected.allowed_actions == []
    assert await h.order_status(order_id) is OrderStatus.PREPARING
    assert ("customer", "rejected") in await h.outbox()
    assert await h.refunds_in_ledger(order_id) == []
    result = await h.handle(view.cancellation_id).result()
    assert result.status is CancellationStatus.REJECTED and result.closed


async def test_withdraw_restores_the_order(h):
    order_id, view = await _requested(h, status=OrderStatus.READY_TO_SHIP)
    withdrawn = await h.client.withdraw(h.shop_id, order_id)
    assert withdrawn.status is CancellationStatus.WITHDRAWN
    assert await h.order_status(order_id) is OrderStatus.READY_TO_SHIP
    assert await h.events(view.cancellation_id) == ["requested", "withdrawn"]


async def test_order_shipped_while_waiting_refuses_acceptance(h):
    """Rule 1 is checked again at acceptance; nothing changes, the merchant can reject."""
    order_id, view = await _requested(h)
    await h.client.set_fulfillment(h.shop_id, order_id, OrderStatus.IN_TRANSIT)
    await _refused(h.client.accept(h.shop_id, order_id, ACCEPT), ErrorCode.ORDER_SHIPPED)
    current = await h.view(view.cancellation_id)
    assert current.status is CancellationStatus.REQUESTED
    assert current.refunds == []
    assert await h.refunds_in_ledger(order_id) == []
    rejected = await h.client.reject(h.shop_id, order_id, RejectRequest(reason="shipped"))
    assert rejected.order_status is OrderStatus.IN_TRANSIT


async def test_accept_after_reject_is_an_invalid_transition(h):
    order_id, _ = await _requested(h)
    await h.client.reject(h.shop_id, order_id, RejectRequest(reason="no"))
    err = await _refused(h.client.accept(h.shop_id, order_id, ACCEPT), ErrorCode.INVALID_TRANSITION)
    assert "rejected" in err.message


async def test_withdraw_after_acceptance_is_refused(h):
    """The customer may withdraw only until acceptance (rule 4)."""
    order_id, _ = await _requested(h)
    await h.client.accept(h.shop_id, order_id, ACCEPT)
    await _refused(h.client.withdraw(h.shop_id, order_id), ErrorCode.INVALID_TRANSITION)


async def test_repeated_accept_with_same_body_answers_like_the_first(h):
    """A repeat that already took effect answers with the view; a conflicting one is refused."""
    order_id, view = await _requested(h)
    first = await h.client.accept(h.shop_id, order_id, ACCEPT)
    again = await h.client.accept(h.shop_id, order_id, ACCEPT)
    assert again.cancellation_id == first.cancellation_id
    await _refused(
        h.client.accept(
            h.shop_id, order_id, AcceptRequest(reason_code="other", refund_method="credits")
        ),
        ErrorCode.INVALID_TRANSITION,
    )
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert len(await h.refunds_in_ledger(order_id)) == 1
    assert (await h.events(view.cancellation_id)).count("accepted") == 1


async def test_same_idempotency_key_performs_the_action_once(h):
    """The idempotency key is the update id: Temporal answers the repeat itself."""
    order_id, view = await _requested(h)
    key = f"key-{uuid.uuid4()}"
    first = await h.client.accept(h.shop_id, order_id, ACCEPT, idempotency_key=key)
    second = await h.client.accept(h.shop_id, order_id, ACCEPT, idempotency_key=key)
    assert first.status is second.status is CancellationStatus.IN_PROGRESS
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert len(await h.refunds_in_ledger(order_id)) == 1


async def test_unknown_refund_and_wrong_state_are_refused(h):
    order_id, _ = await _requested(h)
    await _refused(
        h.client.confirm_refund(h.shop_id, order_id, "r9", ConfirmRefundRequest(reference="x")),
        ErrorCode.INVALID_TRANSITION,
    )
    await h.client.accept(h.shop_id, order_id, ACCEPT)
    await _refused(
        h.client.confirm_refund(h.shop_id, order_id, "r9", ConfirmRefundRequest(reference="x")),
        ErrorCode.INVALID_TRANSITION,
    )


async def test_no_cancellation_yet_is_not_found(h):
    order_id = await h.order()
    await _refused(h.client.accept(h.shop_id, order_id, ACCEPT), ErrorCode.CANCELLATION_NOT_FOUND)
    await _refused(h.client.get_cancellation(h.shop_id, order_id), ErrorCode.CANCELLATION_NOT_FOUND)


async def test_action_after_the_run_closed_gets_a_clear_answer(h):
    """An update sent after the run closed is refused with invalid_transition, not an RPC error."""
    order_id, view = await _requested(h)
    await h.client.withdraw(h.shop_id, order_id)
    await h.handle(view.cancellation_id).result()
    err = await _refused(
        h.client.reject(h.shop_id, order_id, RejectRequest(reason="late")),
        ErrorCode.INVALID_TRANSITION,
    )
    assert "withdrawn" in err.message
    stored = await h.client.get_cancellation(h.shop_id, order_id)
    assert stored.closed and stored.status is CancellationStatus.WITHDRAWN


async def test_signals_carry_the_same_actions(h):
    """Signals with the same names work for fire-and-forget callers (Temporal UI, CLI)."""
    _order_id, view = await _requested(h)
    handle = h.handle(view.cancellation_id)
    await handle.signal("accept", ACCEPT.model_dump(mode="json") | {"actor": "merchant:ops"})
    final = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    accepted = next(e for e in final.history if e.event == "accepted")
    assert accepted.actor == "merchant:ops"


async def test_a_refusal_says_when_the_store_is_a_step_ahead_of_the_run(h):
    """Reliability finding 3: the store committed a step the run has not taken up yet (its
    worker died in between), so the list offers an action the run refuses for a few
    seconds. The refusal says so; nothing changes."""
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    stored = (await h.store.get_cancellation(h.shop_id, view.cancellation_id)).view
    ahead = stored.model_copy(update={"allowed_actions": [Action.UNDO]})
    await h.store.save_view(ahead)  # what the store shows after a step the run lost
    with pytest.raises(CancellationError) as info:
        await h.client.undo(h.shop_id, order_id, UndoRequest(reason="customer changed mind"))
    assert info.value.code is ErrorCode.INVALID_TRANSITION
    assert "still finishing its last step" in info.value.message
    with pytest.raises(CancellationError) as plain:  # refused, and not offered by the store
        await h.client.confirm_repayment(
            h.shop_id, order_id, RepaymentRequest(reference="TX-9", amount=100)
        )
    assert plain.value.code is ErrorCode.INVALID_TRANSITION
    assert "still finishing" not in plain.value.message
    assert (await h.client.get_cancellation(h.shop_id, order_id)).status == "requested"
