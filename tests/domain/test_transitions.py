"""The pure builders the workflow commits as change sets: refund lines, routing, stock and
balance movements of an acceptance, an undo and its reversal, refund-line checks."""

from datetime import UTC, datetime

import pytest

from domain.bank import BankAccountRef
from domain.cancellation import (
    Action,
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    RefundStatus,
)
from domain.changes import BalanceKind
from domain.errors import CancellationError, ErrorCode
from domain.money import Money
from domain.order import Order, OrderItem, OrderStatus, Tender, TenderKind
from domain.refund_plan import RefundChannel, RefundMethod, plan_refund
from domain.scope import scope_of
from domain.transitions import (
    cancel_unexecuted,
    check_line_action,
    current_details,
    recount,
    refund_lines,
    restock_changes,
    route_line,
    undo_holds,
    undo_reversal,
)
from tests.domain.orders import an_order

CID = "cancellation~shop~order-1~1"
BANK = BankAccountRef(ref="ba_1", bank="KB", masked_number="****3210")


def _order() -> Order:
    return an_order(
        shop_id="shop",
        order_id="order-1",
        customer_id="cust-1",
        status=OrderStatus.PAID,
        shipping_fee=1000,
        items=[
            OrderItem(item_id="i1", sku="mug", quantity=2, unit_price=5000),
            OrderItem(item_id="i2", sku="tee", quantity=1, unit_price=4000),
        ],
        tenders=[
            Tender(tender_id="card", kind=TenderKind.CARD, amount=10000, payment_id="pay_1"),
            Tender(tender_id="pts", kind=TenderKind.POINTS, amount=5000),
        ],
    )


def _view(**changes) -> CancellationView:
    values = {
        "cancellation_id": CID,
        "shop_id": "shop",
        "order_id": "order-1",
        "workflow_id": CID,
        "status": CancellationStatus.IN_PROGRESS,
        "order_status": OrderStatus.CANCELLATION_IN_PROGRESS,
        "initiated_by": InitiatedBy.CUSTOMER,
        "channel": Channel.MY_ACCOUNT,
        "refundable": Money(amount=15000, currency="KRW"),
        "reason_code": None,
        "reason": "",
    }
    return CancellationView(**(values | changes))


def _lines():
    order = _order()
    plan = plan_refund(order, RefundMethod.ORIGINAL, amount=15000, refunded_by_tender={})
    return refund_lines(CID, plan)


class TestRefundLines:
    def test_each_planned_refund_gets_a_line_named_after_the_cancellation(self) -> None:
        lines = _lines()
        assert [line.refund_id for line in lines] == [f"{CID}-r1", f"{CID}-r2"]
        assert sum(line.amount for line in lines) == 15000

    def test_a_card_line_waits_for_the_provider_and_points_pay_out_at_once(self) -> None:
        card, points = _lines()
        assert route_line(card, card.channel, None, "cust-1") == []
        assert card.status is RefundStatus.PENDING
        (change,) = route_line(points, points.channel, None, "cust-1")
        assert points.status is RefundStatus.SUCCEEDED
        assert change.balance is BalanceKind.POINTS and change.delta == points.amount
        assert change.key == f"{points.refund_id}:points:0"

    def test_a_bank_deposit_waits_for_the_merchant_with_the_account(self) -> None:
        card, _ = _lines()
        assert route_line(card, RefundChannel.BANK_DEPOSIT, BANK, "cust-1") == []
        assert card.status is RefundStatus.AWAITING_CONFIRMATION
        assert card.bank_account == BANK

    def test_refunded_counts_only_the_lines_that_succeeded(self) -> None:
        card, points = _lines()
        route_line(points, points.channel, None, "cust-1")
        view = _view(refunds=[card, points])
        recount(view)
        assert view.refunded == Money(amount=points.amount, currency="KRW")


class TestLineChecks:
    def test_only_a_line_awaiting_a_deposit_can_be_confirmed(self) -> None:
        card, _ = _lines()
        view = _view(refunds=[card])
        with pytest.raises(CancellationError) as refused:
            check_line_action(view, Action.CONFIRM_REFUND, card.refund_id)
        assert refused.value.code is ErrorCode.INVALID_TRANSITION

    def test_an_unknown_line_is_not_found(self) -> None:
        with pytest.raises(CancellationError) as refused:
            check_line_action(_view(refunds=_lines()), Action.RETRY_REFUND, "nope")
        assert refused.value.code is ErrorCode.REFUND_NOT_FOUND

    def test_a_failed_line_retries_and_a_deposit_needs_an_account(self) -> None:
        card, points = _lines()
        card.status = points.status = RefundStatus.FAILED
        view = _view(refunds=[card, points])
        check_line_action(view, Action.RETRY_REFUND, card.refund_id)
        with pytest.raises(CancellationError) as refused:
            check_line_action(
                view, Action.RETRY_REFUND, card.refund_id, method=RefundMethod.BANK_DEPOSIT
            )
        assert refused.value.code is ErrorCode.VALIDATION_ERROR
        with pytest.raises(CancellationError):
            check_line_action(view, Action.RETRY_REFUND, points.refund_id)


class TestStockAndUndo:
    def test_an_acceptance_restocks_exactly_the_canceled_items(self) -> None:
        order = _order()
        scope = scope_of(order, None)
        changes = restock_changes(CID, order, scope)
        assert {(c.sku, c.delta) for c in changes} == {("mug", 2), ("tee", 1)}
        assert len({c.key for c in changes}) == 2

    def test_an_undo_reserves_the_stock_and_takes_back_balances_and_its_reversal_undoes_it(
        self,
    ) -> None:
        order = _order()
        restocked = restock_changes(CID, order, scope_of(order, None))
        card, points = _lines()
        route_line(points, points.channel, None, "cust-1")
        reserved, taken = undo_holds(CID, 1, restocked, [card, points], "cust-1")
        assert [(c.sku, c.delta) for c in reserved] == [(c.sku, -c.delta) for c in restocked]
        assert [(b.balance, b.delta) for b in taken] == [(BalanceKind.POINTS, -points.amount)]
        released, returned = undo_reversal(CID, 1, reserved, taken)
        assert sum(c.delta for c in reserved + released) == 0
        assert sum(b.delta for b in taken + returned) == 0
        keys = [c.key for c in restocked + reserved + released] + [b.key for b in taken + returned]
        assert len(keys) == len(set(keys))

    def test_a_second_undo_attempt_has_keys_of_its_own(self) -> None:
        order = _order()
        restocked = restock_changes(CID, order, scope_of(order, None))
        first, _ = undo_holds(CID, 1, restocked, [], "cust-1")
        second, _ = undo_holds(CID, 2, restocked, [], "cust-1")
        assert not {c.key for c in first} & {c.key for c in second}

    def test_an_undo_cancels_only_lines_that_moved_no_money(self) -> None:
        card, points = _lines()
        route_line(points, points.channel, None, "cust-1")
        card.status = RefundStatus.FAILED
        view = _view(refunds=[card, points])
        cancel_unexecuted(view)
        assert [line.status for line in view.refunds] == [
            RefundStatus.CANCELED,
            RefundStatus.SUCCEEDED,
        ]


def test_current_details_say_what_the_run_waits_for() -> None:
    card, _ = _lines()
    view = _view(refunds=[card], needs_attention=None)
    view.history = []
    assert current_details(view).startswith("Refunding: " + card.refund_id)
    canceled = _view(
        status=CancellationStatus.CANCELED, undo_until=datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    )
    assert "undo possible until 2030-01-02 03:04 UTC" in current_details(canceled)
