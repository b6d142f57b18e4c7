"""Starting cancellations: who may, when, and one open cancellation per order."""

import pytest

from domain.cancellation import CancellationStatus
from domain.errors import CancellationError, ErrorCode
from domain.order import OrderStatus
from domain.requests import AcceptRequest, RejectRequest, StartRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = StartRequest(initiated_by="customer", channel="my_account", reason_code="changed_mind")
CONTACT = StartRequest(
    initiated_by="merchant",
    channel="contact",
    reason_code="customer_contact",
    accept=AcceptRequest(reason_code="customer_contact", reason="customer phoned"),
)


async def _refused(coro, code: ErrorCode) -> CancellationError:
    with pytest.raises(CancellationError) as info:
        await coro
    assert info.value.code is code, info.value
    return info.value


@pytest.mark.parametrize("status", [OrderStatus.IN_TRANSIT, OrderStatus.DELIVERED])
async def test_shipped_order_is_refused_as_a_return(h, status):
    """Rule 1: in transit or delivered is a return; nothing is started or changed."""
    order_id = await h.order(status=status)
    err = await _refused(
        h.client.start_cancellation(h.shop_id, order_id, CUSTOMER), ErrorCode.ORDER_SHIPPED
    )
    assert "return" in err.message
    assert await h.order_status(order_id) is status
    assert await h.store.cancellations_of_order(h.shop_id, order_id) == []


async def test_customer_requests_disabled_by_shop_setting(h):
    """Rule 2: the shop's setting off refuses My Account requests."""
    await h.settings(customer_cancellation_requests=False)
    order_id = await h.order()
    err = await _refused(
        h.client.start_cancellation(h.shop_id, order_id, CUSTOMER),
        ErrorCode.CUSTOMER_REQUESTS_DISABLED,
    )
    assert "contact the store" in err.message
    assert await h.order_status(order_id) is OrderStatus.PAID


async def test_phone_request_entered_by_merchant_ignores_the_setting(h):
    """Rule 2 and 5: a request by phone is entered as a merchant cancellation."""
    await h.settings(customer_cancellation_requests=False)
    order_id = await h.order()
    view, created = await h.client.start_cancellation(h.shop_id, order_id, CONTACT)
    assert created
    assert view.channel == "contact"
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)


async def test_unknown_order_is_not_found(h):
    await _refused(
        h.client.start_cancellation(h.shop_id, "nope", CUSTOMER), ErrorCode.ORDER_NOT_FOUND
    )


@pytest.mark.parametrize(
    "request_",
    [
        StartRequest(initiated_by="customer", channel="contact"),
        StartRequest(initiated_by="merchant", channel="admin"),
        StartRequest(
            initiated_by="customer",
            channel="my_account",
            accept=AcceptRequest(reason_code="other"),
        ),
    ],
    ids=["customer-by-contact", "merchant-without-accept", "customer-with-accept"],
)
async def test_inconsistent_start_is_a_validation_error(h, request_):
    order_id = await h.order()
    await _refused(
        h.client.start_cancellation(h.shop_id, order_id, request_), ErrorCode.VALIDATION_ERROR
    )
    assert await h.order_status(order_id) is OrderStatus.PAID


async def test_starting_again_returns_the_open_cancellation(h):
    """Rule 3: one open cancellation per order; a second start returns it."""
    order_id = await h.order()
    first, created = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    second, created_again = await h.client.start_cancellation(h.shop_id, order_id, CONTACT)
    assert created and not created_again
    assert second.cancellation_id == first.cancellation_id
    assert second.status is CancellationStatus.REQUESTED
    assert len(await h.store.cancellations_of_order(h.shop_id, order_id)) == 1


async def test_after_a_rejection_a_new_cancellation_may_start(h):
    """Rule 3: rejected, withdrawn or undone cancellations don't block a new one."""
    order_id = await h.order()
    first, _ = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    await h.client.reject(h.shop_id, order_id, RejectRequest(reason="already packed"))
    second, created = await h.client.start_cancellation(h.shop_id, order_id, CUSTOMER)
    assert created
    assert second.cancellation_id.endswith("~2")
    assert first.cancellation_id.endswith("~1")
    listed = await h.client.cancellations_of_order(h.shop_id, order_id)
    assert [v.cancellation_id for v in listed] == [second.cancellation_id, first.cancellation_id]


async def test_canceled_order_has_nothing_left_to_cancel(h):
    """Rule 3: an order with nothing left to cancel refuses with invalid_transition."""
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CONTACT)
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    await _refused(
        h.client.start_cancellation(h.shop_id, order_id, CUSTOMER), ErrorCode.INVALID_TRANSITION
    )


async def test_unpaid_order_is_canceled_without_refunds(h):
    """Rule 8: an order awaiting payment needs no money back."""
    order_id = await h.order(status=OrderStatus.AWAITING_PAYMENT)
    view, _ = await h.client.start_cancellation(h.shop_id, order_id, CONTACT)
    final = await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    assert final.refunds == []
    assert final.refundable is not None and final.refundable.amount == 0
    assert await h.order_status(order_id) is OrderStatus.CANCELED
