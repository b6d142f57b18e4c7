"""The cancellation rules of the store-admin guide as pure functions.

Rule numbers are those of ``docs/rules.md``.
"""

from domain.cancellation import (
    OPEN_STATUSES,
    AcceptInput,
    Action,
    Attention,
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    RefundStatus,
)
from domain.errors import CancellationError, ErrorCode
from domain.order import CANCELLATION_STATUSES, Order, OrderStatus
from domain.refund_plan import RefundPlan
from domain.shop import ShopSettings


def check_not_shipped(order: Order) -> None:
    """Rule 1: shipped orders are returns, not cancellations."""
    if order.is_shipped:
        raise CancellationError(
            ErrorCode.ORDER_SHIPPED,
            f"order {order.order_id} is {order.status.value}; process it as a return instead",
        )


def check_can_start(
    order: Order,
    settings: ShopSettings,
    initiated_by: InitiatedBy,
    channel: Channel,
) -> None:
    """Rules 1 and 2, and that the order is not canceled already.

    Raises:
        CancellationError: ``order_shipped``, ``customer_requests_disabled`` or
            ``invalid_transition``.
    """
    check_not_shipped(order)
    if (
        initiated_by is InitiatedBy.CUSTOMER
        and channel is Channel.MY_ACCOUNT
        and not settings.customer_cancellation_requests
    ):
        raise CancellationError(
            ErrorCode.CUSTOMER_REQUESTS_DISABLED,
            "this shop does not take cancellation requests from My Account; "
            "the customer should contact the store",
        )
    if order.status is OrderStatus.CANCELED:
        raise CancellationError(
            ErrorCode.INVALID_TRANSITION,
            f"order {order.order_id} is canceled already; nothing is left to cancel",
        )


def check_start_input(initiated_by: InitiatedBy, channel: Channel, has_accept: bool) -> None:
    """Customers request from My Account; merchants start with their acceptance (rule 5)."""
    if initiated_by is InitiatedBy.CUSTOMER:
        if channel is not Channel.MY_ACCOUNT:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR,
                "a customer's phone or mail request is entered by the merchant "
                "(initiated_by merchant, channel contact)",
            )
        if has_accept:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR, "a customer request can't carry an acceptance"
            )
    elif not has_accept:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            "a merchant-initiated cancellation starts accepted: send the accept body",
        )
    elif channel is Channel.MY_ACCOUNT:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, "merchants use channel admin or contact, not my_account"
        )


def check_accept(accept: AcceptInput, plan: RefundPlan) -> None:
    """A bank deposit needs the customer's bank account (rule 6)."""
    if plan.needs_bank_account and accept.bank_account is None:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            "this refund goes out by bank deposit: bank_account is required",
        )


def is_open(status: CancellationStatus) -> bool:
    """Rule 3: an open cancellation blocks a second one for the order."""
    return status in OPEN_STATUSES


def allowed_actions(view: CancellationView) -> list[Action]:
    """What merchants and customers may do now, in route names."""
    if view.closed:
        return []
    match view.status:
        case CancellationStatus.REQUESTED:
            actions = [Action.ACCEPT, Action.REJECT]
            if view.initiated_by is InitiatedBy.CUSTOMER:
                actions.append(Action.WITHDRAW)
            return actions
        case CancellationStatus.IN_PROGRESS:
            actions = []
            statuses = {line.status for line in view.refunds}
            if RefundStatus.AWAITING_CONFIRMATION in statuses:
                actions.append(Action.CONFIRM_REFUND)
            if RefundStatus.FAILED in statuses:
                actions.append(Action.RETRY_REFUND)
            actions.append(Action.UNDO)
            return actions
        case CancellationStatus.CANCELED:
            return [] if undo_window_is_zero(view) else [Action.UNDO]
        case CancellationStatus.AWAITING_REPAYMENT:
            return [Action.REPAYMENT]
        case _:
            return []


def undo_window_is_zero(view: CancellationView) -> bool:
    """The shop allows no undo (``undo_window`` ``PT0S``): the window ended as it began."""
    return (
        view.canceled_at is not None
        and view.undo_until is not None
        and view.undo_until <= view.canceled_at
    )


REVERSED = "refund_reversed"
"""How a line's ``failure`` starts when the provider reversed a refund after success."""


def refund_attention(view: CancellationView) -> Attention | None:
    """While refunds run, what a person must do: a reversed or failed refund first, then an
    undo that was rolled back, then a provider that has not answered for an hour, then a
    bank deposit to make."""
    statuses = {line.status for line in view.refunds}
    if any(
        line.failure and line.failure.startswith(REVERSED)
        for line in view.refunds
        if line.status is RefundStatus.FAILED
    ):
        return Attention.REFUND_REVERSED
    if RefundStatus.FAILED in statuses:
        return Attention.REFUND_FAILED
    if view.needs_attention is Attention.UNDO_FAILED:
        return Attention.UNDO_FAILED
    if view.needs_attention is Attention.PROVIDER_UNAVAILABLE and (
        RefundStatus.PROCESSING in statuses
    ):
        return Attention.PROVIDER_UNAVAILABLE
    if RefundStatus.AWAITING_CONFIRMATION in statuses:
        return Attention.AWAITING_BANK_DEPOSIT
    return None


def restorable_status(order: Order) -> OrderStatus:
    """The status an order goes back to after a reject, withdraw or undo."""
    if order.status_before_cancellation is not None:
        return order.status_before_cancellation
    if order.status in CANCELLATION_STATUSES:
        return OrderStatus.PAID
    return order.status
