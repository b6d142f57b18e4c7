"""Pure builders of what a transition changes: refund lines and how each is carried out,
the stock and balance movements of an acceptance, an undo and its reversal, the checks of
a refund-line action, and the words an operator reads about a run.

The workflow decides with these and commits the result as one change set
(``domain.changes``); nothing here knows about Temporal, so each builder has fast tests
(``tests/domain/test_transitions.py``). Every key is built from the cancellation id, which
is unique across shops (``domain.contract``), so every movement happens once.

Rule numbers are those of ``docs/rules.md``.
"""

from collections.abc import Sequence
from typing import Any

from domain.bank import BankAccountRef
from domain.cancellation import (
    Action,
    CancellationStatus,
    CancellationView,
    RefundLine,
    RefundStatus,
    StartCancellationInput,
)
from domain.changes import BalanceChange, BalanceKind, ChangeSet, StockChange
from domain.errors import CancellationError, ErrorCode
from domain.money import Money
from domain.order import Order, TenderKind
from domain.refund_plan import RefundChannel, RefundMethod, RefundPlan
from domain.scope import CancellationScope

# ----------------------------------------------------------------------------- the start


def requested_view(
    start: StartCancellationInput, *, workflow_id: str, **facts: Any
) -> CancellationView:
    """A cancellation as it starts: requested, nothing decided; ``facts`` adds what the caller
    knows (the run: its items and start time; the client: what accepting would refund)."""
    return CancellationView(
        cancellation_id=start.cancellation_id,
        shop_id=start.shop_id,
        order_id=start.order_id,
        workflow_id=workflow_id,
        status=CancellationStatus.REQUESTED,
        order_status=None,
        initiated_by=start.initiated_by,
        channel=start.channel,
        reason_code=start.reason_code,
        reason=start.reason,
        **facts,
    )


# ----------------------------------------------------------------------------- refund lines


def refund_lines(cancellation_id: str, plan: RefundPlan) -> list[RefundLine]:
    """One refund line per planned refund, ``{cancellation_id}-r{n}``, not yet routed."""
    return [
        RefundLine(
            refund_id=f"{cancellation_id}-r{n}",
            tender_id=planned.tender_id,
            tender_kind=planned.tender_kind,
            method=planned.method,
            channel=planned.channel,
            amount=planned.amount,
            payment_id=planned.payment_id,
        )
        for n, planned in enumerate(plan.lines, start=1)
    ]


def route_line(
    line: RefundLine,
    channel: RefundChannel,
    bank_account: BankAccountRef | None,
    customer_id: str,
) -> list[BalanceChange]:
    """Send ``line`` to who carries it out (rule 7); store balances pay out at once, so
    their movement is returned to go into the same change set."""
    line.channel = channel
    match channel:
        case RefundChannel.PROVIDER:
            line.status = RefundStatus.PENDING
        case RefundChannel.BANK_DEPOSIT:
            line.status = RefundStatus.AWAITING_CONFIRMATION
            line.bank_account = bank_account
        case RefundChannel.POINTS | RefundChannel.CREDITS:
            kind = BalanceKind.POINTS if channel is RefundChannel.POINTS else BalanceKind.CREDITS
            line.status = RefundStatus.SUCCEEDED
            return [
                BalanceChange(
                    customer_id=customer_id,
                    balance=kind,
                    delta=line.amount,
                    key=f"{line.refund_id}:{kind.value}:{line.attempts}",
                )
            ]
    return []


def retry_channel(method: RefundMethod) -> RefundChannel:
    """Where a failed line goes when the merchant switches its method."""
    return (
        RefundChannel.BANK_DEPOSIT if method is RefundMethod.BANK_DEPOSIT else RefundChannel.CREDITS
    )


def find_line(view: CancellationView, refund_id: str) -> RefundLine:
    """The view's refund line ``refund_id``, or ``refund_not_found``."""
    for line in view.refunds:
        if line.refund_id == refund_id:
            return line
    raise CancellationError(
        ErrorCode.REFUND_NOT_FOUND,
        f"cancellation {view.cancellation_id} has no refund {refund_id}",
    )


def check_line_action(
    view: CancellationView,
    action: Action,
    refund_id: str,
    *,
    method: RefundMethod | None = None,
    bank_account: BankAccountRef | None = None,
) -> None:
    """Whether a refund line may be confirmed or retried now (rule 7).

    Raises:
        CancellationError: ``refund_not_found``, ``invalid_transition`` (the line is not
            awaiting a deposit, or not failed) or ``validation_error``.
    """
    line = find_line(view, refund_id)
    if action is Action.CONFIRM_REFUND and line.status is not RefundStatus.AWAITING_CONFIRMATION:
        raise CancellationError(
            ErrorCode.INVALID_TRANSITION,
            f"refund {line.refund_id} is {line.status.value}, not awaiting confirmation",
        )
    if action is Action.RETRY_REFUND:
        if line.status is not RefundStatus.FAILED:
            raise CancellationError(
                ErrorCode.INVALID_TRANSITION,
                f"refund {line.refund_id} is {line.status.value}; only failed refunds retry",
            )
        if method is RefundMethod.BANK_DEPOSIT and bank_account is None:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR, "a bank deposit needs the customer's bank_account"
            )
        if method is None and line.tender_kind is not TenderKind.CARD:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR, "only card refunds can be retried as they are"
            )


def recount(view: CancellationView) -> None:
    """``refunded`` is the sum of the lines that succeeded (rule 8)."""
    if view.refundable is not None:
        view.refunded = Money(
            amount=sum(r.amount for r in view.refunds if r.status is RefundStatus.SUCCEEDED),
            currency=view.refundable.currency,
        )


def fully_refunded(view: CancellationView) -> bool:
    """Every refund line has succeeded: the order may be canceled (rule 8)."""
    return all(line.status is RefundStatus.SUCCEEDED for line in view.refunds)


# ----------------------------------------------------------------------------- stock, undo


def restock_changes(
    cancellation_id: str, order: Order, scope: CancellationScope
) -> list[StockChange]:
    """Put the canceled items back in stock (rule 6), once each."""
    skus = {item.item_id: item.sku for item in order.items}
    return [
        StockChange(
            sku=skus[item.item_id],
            delta=item.quantity,
            key=f"{cancellation_id}:restock:{item.item_id}",
        )
        for item in scope.items
    ]


def undo_key(cancellation_id: str, attempt: int) -> str:
    """The prefix of every movement key of one undo attempt."""
    return f"{cancellation_id}:undo-{attempt}"


def undo_holds(
    cancellation_id: str,
    attempt: int,
    restocked: Sequence[StockChange],
    executed: Sequence[RefundLine],
    customer_id: str,
) -> tuple[list[StockChange], list[BalanceChange]]:
    """What an undo takes back before anything else (rule 11): the stock the acceptance
    returned, reserved again, and the points and credits it paid out."""
    key = undo_key(cancellation_id, attempt)
    reserved = [
        StockChange(sku=s.sku, delta=-s.delta, key=f"{key}:reserve:{s.key}") for s in restocked
    ]
    taken_back = [
        BalanceChange(
            customer_id=customer_id,
            balance=(
                BalanceKind.POINTS if line.channel is RefundChannel.POINTS else BalanceKind.CREDITS
            ),
            delta=-line.amount,
            key=f"{key}:take-back:{line.refund_id}",
        )
        for line in executed
        if line.channel in (RefundChannel.POINTS, RefundChannel.CREDITS)
    ]
    return reserved, taken_back


def undo_reversal(
    cancellation_id: str,
    attempt: int,
    reserved: Sequence[StockChange],
    taken_back: Sequence[BalanceChange],
) -> tuple[list[StockChange], list[BalanceChange]]:
    """The exact opposite of :func:`undo_holds`: the stock released, the balances returned.

    Both only add back what the undo took, so neither can fail for want of stock or
    balance when a repayment window lapses."""
    key = undo_key(cancellation_id, attempt)
    stock = [StockChange(sku=s.sku, delta=-s.delta, key=f"{key}:release:{s.key}") for s in reserved]
    balances = [
        b.model_copy(update={"delta": -b.delta, "key": f"{b.key}:return"}) for b in taken_back
    ]
    return stock, balances


def cancel_unexecuted(view: CancellationView) -> None:
    """An undo cancels the refund lines that have not moved money (rule 11)."""
    for line in view.refunds:
        if line.status in (
            RefundStatus.PENDING,
            RefundStatus.AWAITING_CONFIRMATION,
            RefundStatus.FAILED,
        ):
            line.status = RefundStatus.CANCELED


# ----------------------------------------------------------------------------- words


def current_details(view: CancellationView) -> str:
    """What the run waits for, in plain words (the Web UI's current details)."""
    since = view.history[-1].at.strftime("%Y-%m-%d %H:%M UTC") if view.history else ""
    match view.status:
        case CancellationStatus.REQUESTED:
            text = f"Waiting for the merchant to accept or reject, since {since}."
        case CancellationStatus.IN_PROGRESS:
            waiting = [
                f"{line.refund_id} ({line.tender_kind.value}, {line.status.value})"
                for line in view.refunds
                if line.status is not RefundStatus.SUCCEEDED
            ]
            text = "Refunding: " + ("; ".join(waiting) or "finishing") + f". Since {since}."
        case CancellationStatus.CANCELED:
            until = f"{view.undo_until:%Y-%m-%d %H:%M} UTC" if view.undo_until else "now"
            text = f"Canceled and fully refunded; undo possible until {until}."
        case _:
            text = f"{view.status.value.capitalize()} since {since}."
    if view.needs_attention:
        text = f"NEEDS ATTENTION ({view.needs_attention.value}). " + text
    return text


def change_summary(event: str, changes: ChangeSet) -> str:
    """One line an operator reads in the Web UI next to the store write."""
    parts = [event.replace("_", " ").capitalize()]
    if changes.order is not None:
        parts.append(
            "order → " + (changes.order.status.value if changes.order.status else "previous status")
        )
    if changes.stock:
        parts.append(f"restock {sum(s.delta for s in changes.stock)} units")
    for balance in changes.balances:
        parts.append(f"return {balance.delta:,} {balance.balance.value}")
    if changes.notifications:
        parts.append("notify " + ", ".join(n.recipient.value for n in changes.notifications))
    return "; ".join(parts)
