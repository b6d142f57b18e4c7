"""The store-admin guide's rules as pure functions, and the order document's checks."""

import pytest
from pydantic import ValidationError

from domain.bank import BankAccount, mask_account_number
from domain.cancellation import (
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    RefundLine,
    RefundStatus,
)
from domain.errors import CancellationError, ErrorCode
from domain.money import format_money
from domain.order import Order, OrderDocument, OrderItem, OrderStatus, Tender, TenderKind
from domain.refund_plan import RefundChannel, RefundMethod
from domain.rules import allowed_actions, check_can_start, check_start_input, restorable_status
from domain.shop import ShopSettings
from tests.domain.orders import an_order

CUSTOMER, MERCHANT = InitiatedBy.CUSTOMER, InitiatedBy.MERCHANT
MY_ACCOUNT = Channel.MY_ACCOUNT
ITEM = OrderItem(item_id="i1", sku="mug", quantity=2, unit_price=10_000)


def _order(status: OrderStatus = OrderStatus.PAID, **extra) -> Order:
    return an_order(
        [ITEM],
        [Tender(tender_id="t", kind=TenderKind.CARD, amount=20_000, payment_id="p")],
        status=status,
        shipping_fee=0,
        **extra,
    )


class TestStart:
    @pytest.mark.parametrize("status", [OrderStatus.IN_TRANSIT, OrderStatus.DELIVERED])
    def test_shipped_orders_are_returns(self, status):
        with pytest.raises(CancellationError) as info:
            check_can_start(_order(status), ShopSettings(), CUSTOMER, MY_ACCOUNT)
        assert info.value.code is ErrorCode.ORDER_SHIPPED

    def test_customer_requests_follow_the_shop_setting(self):
        closed = ShopSettings(customer_cancellation_requests=False)
        with pytest.raises(CancellationError) as info:
            check_can_start(_order(), closed, CUSTOMER, MY_ACCOUNT)
        assert info.value.code is ErrorCode.CUSTOMER_REQUESTS_DISABLED
        check_can_start(_order(), closed, MERCHANT, Channel.CONTACT)

    def test_a_canceled_order_has_nothing_left(self):
        with pytest.raises(CancellationError) as info:
            check_can_start(_order(OrderStatus.CANCELED), ShopSettings(), MERCHANT, Channel.ADMIN)
        assert info.value.code is ErrorCode.INVALID_TRANSITION

    @pytest.mark.parametrize(
        ("initiated_by", "channel", "has_accept"),
        [
            ("customer", "contact", False),
            ("customer", "my_account", True),
            ("merchant", "admin", False),
            ("merchant", "my_account", True),
        ],
    )
    def test_inconsistent_starts_are_refused(self, initiated_by, channel, has_accept):
        with pytest.raises(CancellationError) as info:
            check_start_input(InitiatedBy(initiated_by), Channel(channel), has_accept)
        assert info.value.code is ErrorCode.VALIDATION_ERROR


class TestOrderDocument:
    def test_tenders_must_add_up_to_items_and_shipping(self):
        with pytest.raises(ValidationError, match="add up"):
            OrderDocument(
                customer_id="c",
                currency="KRW",
                shipping_fee=3000,
                items=[ITEM],
                tenders=[Tender(tender_id="t", kind=TenderKind.CARD, amount=1, payment_id="p")],
            )

    def test_awaiting_payment_has_no_tenders(self):
        doc = OrderDocument(
            customer_id="c", currency="KRW", status="awaiting_payment", items=[ITEM]
        )
        assert doc.tenders == []

    @pytest.mark.parametrize("amount", [-1, 1.5, "10", 10**16, True])
    def test_amounts_are_exact_non_negative_integers(self, amount):
        with pytest.raises(ValidationError):
            OrderItem(item_id="i", sku="k", quantity=1, unit_price=amount)

    def test_cancellation_statuses_are_not_for_backend_services(self):
        with pytest.raises(ValidationError, match="set by cancellations"):
            OrderDocument(customer_id="c", currency="KRW", status="canceled", items=[ITEM])

    def test_card_tenders_need_a_payment(self):
        with pytest.raises(ValidationError, match="payment_id"):
            Tender(tender_id="t", kind=TenderKind.CARD, amount=1)


def test_status_before_cancellation_is_what_comes_back():
    assert restorable_status(_order(OrderStatus.CANCELLATION_REQUESTED)) is OrderStatus.PAID
    restored = _order(
        OrderStatus.CANCELLATION_REQUESTED, status_before_cancellation=OrderStatus.PREPARING
    )
    assert restorable_status(restored) is OrderStatus.PREPARING


def test_allowed_actions_follow_status_and_refund_lines():
    view = CancellationView(
        cancellation_id="c",
        shop_id="s",
        order_id="o",
        workflow_id="c",
        status=CancellationStatus.REQUESTED,
        order_status=None,
        initiated_by="merchant",
        channel="admin",
        reason_code=None,
        reason="",
    )
    assert allowed_actions(view) == ["accept", "reject"]
    line = RefundLine(
        refund_id="r1",
        tender_id="t",
        tender_kind=TenderKind.CARD,
        method=RefundMethod.ORIGINAL,
        channel=RefundChannel.PROVIDER,
        amount=1,
        status=RefundStatus.FAILED,
    )
    view.status = CancellationStatus.IN_PROGRESS
    view.refunds = [line]
    assert allowed_actions(view) == ["retry_refund", "undo"]
    view.closed = True
    assert allowed_actions(view) == []


def test_bank_account_numbers_are_masked_in_text():
    account = BankAccount(bank="Shinhan", account_number="110-123-456789", holder="Kim")
    assert "110-123" not in repr(account) and "110-123" not in str(account)
    assert mask_account_number("110-123-456789") == "**********6789"


def test_money_prints_for_people():
    assert format_money(30000, "KRW") == "30,000 KRW"
    assert format_money(1250, "USD") == "12.50 USD"
