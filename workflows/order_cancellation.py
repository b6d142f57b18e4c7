"""The ``OrderCancellation`` workflow: one order cancellation, from request to closing.

``run()`` reads like the store-admin guide: open the cancellation, wait for the
merchant's decision, refund every tender, mark the order canceled, keep the run open
for the undo window. Signal and update handlers only queue commands; ``run()`` carries
them out one at a time, so every change of state happens in one place and in order.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.provider import (
        ProviderRefundSettled,
    )
    from activities.store import (
        OpenCancellationInput,
        OpenCancellationResult,
        StoreActivities,
    )
    from domain.cancellation import (
        AcceptInput,
        Action,
        Attention,
        CancellationStatus,
        CancellationView,
        ConfirmRefundInput,
        ConfirmRepaymentInput,
        HistoryEntry,
        RefundStatus,
        RejectInput,
        RetryRefundInput,
        StartCancellationInput,
        UndoInput,
        WithdrawInput,
    )
    from domain.changes import (
        BalanceChange,
        ItemChange,
        Notification,
        OrderChange,
        Recipient,
    )
    from domain.errors import CancellationError, ErrorCode
    from domain.money import Money
    from domain.order import OrderStatus
    from domain.refund_plan import RefundChannel, RefundMethod, plan_refund
    from domain.rules import REVERSED, allowed_actions, check_accept, restorable_status
    from domain.scope import refundable_amount, refundable_before_acceptance
    from domain.transitions import (
        find_line,
        recount,
        refund_lines,
        requested_view,
        restock_changes,
        retry_channel,
        route_line,
    )
    from workflows.commands import CommandQueue, body, refusal
    from workflows.core import (
        RunState,
        application_error,
        store_refusal,
    )
    from workflows.handling import CommandSteps
    from workflows.policies import (
        PROVIDER_REFUND_EVENTS,
        RECONCILE_BEFORE_SWITCH,
    )
    from workflows.refunds import RefundSteps
    from workflows.search_attributes import start_search_attributes
    from workflows.undo import UndoSteps


@workflow.defn(name="OrderCancellation")
class OrderCancellationWorkflow(UndoSteps, RefundSteps, CommandSteps):
    """One cancellation of one order (see ``docs/rules.md`` for the rules it follows)."""

    @workflow.init
    def __init__(self, start: StartCancellationInput) -> None:
        self._start = start
        self._view = requested_view(
            start,
            workflow_id=workflow.info().workflow_id,
            items=start.items,
            created_at=workflow.now(),
        )
        self._run = RunState()
        # What the search attributes say now (the client set them from this at start).
        self._published = self._view.model_copy(deep=True)
        self._commands = CommandQueue()
        self._opened = False
        # Opened, and a starting acceptance applied: what the `opened` update waits for.
        self._ready = False
        self._refusal: ApplicationError | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Provider refunds whose settlement the provider's webhook reported.
        self._settled: set[str] = set()
        # Provider outcomes arrive while a command may be mid-transition; the lock keeps
        # each transition's read-decide-write of the view whole.
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ the process

    @workflow.run
    async def run(self, start: StartCancellationInput) -> CancellationView:
        """Carry the cancellation out; however it ends, answer what is still queued and let
        every handler finish before the run closes."""
        try:
            await self._cancel_order(start)
        except ApplicationError as refusal:
            # The `opened` update answers the starter with the same refusal first.
            self._refusal = refusal
            self._commands.refuse_all(f"the cancellation was refused: {refusal.message}")
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        self._commands.refuse_all(f"the cancellation is closed ({self._view.status.value})")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    async def _cancel_order(self, start: StartCancellationInput) -> None:
        """Request → decision → refunds → canceled → undo window → closed."""
        await self._open()
        if start.accept is not None:
            await self._accept_at_start(start.accept)
        self._ready = True
        while True:
            match self._view.status:
                case CancellationStatus.REQUESTED:
                    await self._wait_for_decision()
                case CancellationStatus.IN_PROGRESS:
                    await self._refund_until_fully_refunded()
                    if self._view.status is CancellationStatus.IN_PROGRESS:
                        await self._complete()
                case CancellationStatus.CANCELED:
                    if not await self._wait_out_undo_window():
                        break
                case CancellationStatus.AWAITING_REPAYMENT:
                    await self._wait_for_repayment()
                case _:
                    break
        self._view.closed = True
        self._view.allowed_actions = []
        workflow.set_current_details(f"Closed: {self._view.status.value}.")

    async def _open(self) -> None:
        """Check the order may be canceled and hold it for this cancellation."""
        start = self._start
        self._view.history.append(
            HistoryEntry(
                at=workflow.now(),
                event="requested",
                actor=start.actor,
                detail={"channel": start.channel.value, "reason_code": start.reason_code},
            )
        )
        try:
            opened: OpenCancellationResult = await self._store_write(
                StoreActivities.open_cancellation,
                OpenCancellationInput(start=start, view=self._opening_view(), at=workflow.now()),
                summary=f"Open cancellation of order {start.order_id}",
            )
        except ActivityError as err:
            raise store_refusal(err) from None
        self._run.order = opened.order
        self._run.settings = opened.settings
        self._run.refunded_by_tender = opened.refunded_by_tender
        # Money from the start: what accepting would refund, and 0 refunded so far.
        self._view.refundable = refundable_before_acceptance(
            opened.order, start.items, opened.refunded_by_tender
        )
        recount(self._view)
        self._view.order_status = opened.order.status
        self._view.created_at = opened.created_at
        self._view.allowed_actions = allowed_actions(self._view)
        self._opened = True
        self._describe()

    async def _accept_at_start(self, accept: AcceptInput) -> None:
        """A merchant-initiated cancellation starts accepted (rule 5)."""
        try:
            async with self._lock:
                await self._accept(accept)
                self._run.applied.append((Action.ACCEPT, body(accept)))
        except ApplicationError as refusal:
            # The order stays as it was: close this cancellation and say why.
            async with self._lock:
                await self._close_request(
                    CancellationStatus.REJECTED,
                    "acceptance_refused",
                    "system",
                    {"code": refusal.type, "message": refusal.message},
                    notify=None,
                )
            raise

    async def _wait_for_decision(self) -> None:
        """Serve accept, reject and withdraw; remind the merchant once when overdue (rule 4)."""
        remind_at = self._view.created_at or workflow.now()
        remind_at += self._run.settings.request_reminder_after
        reminded = False
        while self._view.status is CancellationStatus.REQUESTED:
            timeout = None if reminded else max(remind_at - workflow.now(), timedelta(0))
            try:
                await workflow.wait_condition(
                    lambda: bool(self._commands),
                    timeout=timeout,
                    timeout_summary=(
                        f"Wait for merchant decision, reminder at {remind_at:%Y-%m-%d %H:%M} UTC"
                    ),
                )
            except TimeoutError:
                await self._remind_merchant()
                reminded = True
                continue
            await self._run_next_command()

    async def _refund_until_fully_refunded(self) -> None:
        """Execute refund lines until every one has succeeded (rules 7 and 8), or an undo
        took the cancellation elsewhere."""
        while self._view.status is CancellationStatus.IN_PROGRESS and not self._fully_refunded():
            async with self._lock:
                for line in self._view.refunds:
                    if (
                        line.channel is RefundChannel.PROVIDER
                        and line.status is RefundStatus.PENDING
                    ):
                        line.status = RefundStatus.PROCESSING
                        line.attempts += 1
                        task = asyncio.create_task(self._pay_back(line.refund_id, line.attempts))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                self._describe()
            await workflow.wait_condition(
                lambda: (
                    bool(self._commands)
                    or self._fully_refunded()
                    or self._has_pending()
                    or bool(self._run.provider_events)
                ),
            )
            await self._apply_provider_events()
            if self._commands:
                await self._run_next_command()

    async def _complete(self) -> None:
        """Everything is refunded: the order is canceled (rule 8)."""
        async with self._lock:
            now = workflow.now()
            view = self._next_view(
                status=CancellationStatus.CANCELED,
                order_status=OrderStatus.CANCELED,
                canceled_at=now,
                undo_until=now + self._run.settings.undo_window,
                needs_attention=None,
            )
            await self._commit(
                view,
                event="canceled",
                actor="system",
                detail={"refunded": view.refunded.amount if view.refunded else 0},
                order=self._order_change(OrderStatus.CANCELED),
                refund_lines=view.refunds,
                notifications=[Notification(recipient=Recipient.CUSTOMER, template="canceled")],
            )

    async def _wait_out_undo_window(self) -> bool:
        """Stay open while the merchant may still undo (rule 11).

        Returns ``False`` once the window has passed, ``True`` when an undo moved the
        cancellation on.
        """
        until = self._view.undo_until or workflow.now()
        while self._view.status is CancellationStatus.CANCELED:
            remaining = until - workflow.now()
            if remaining <= timedelta(0):
                return False
            try:
                await workflow.wait_condition(
                    lambda: bool(self._commands) or bool(self._run.provider_events),
                    timeout=remaining,
                    timeout_summary=f"Undo window closes at {until:%Y-%m-%d %H:%M} UTC",
                )
            except TimeoutError:
                return False
            await self._apply_provider_events()  # a refund reversed: back to in progress
            if self._commands and self._view.status is CancellationStatus.CANCELED:
                await self._run_next_command()
        return True

    async def _wait_for_repayment(self) -> None:
        """After an undo, wait for the customer to pay again; reverse the undo if they don't."""
        until = self._view.repayment_until or workflow.now()
        while self._view.status is CancellationStatus.AWAITING_REPAYMENT:
            remaining = until - workflow.now()
            try:
                if remaining <= timedelta(0):
                    raise TimeoutError
                await workflow.wait_condition(
                    lambda: bool(self._commands),
                    timeout=remaining,
                    timeout_summary=f"Wait for repayment until {until:%Y-%m-%d %H:%M} UTC",
                )
            except TimeoutError:
                async with self._lock:
                    await self._reverse_undo("repayment_lapsed", Attention.NONE)
                return
            await self._run_next_command()

    # ------------------------------------------------------------------ transitions

    async def _accept(self, accept: AcceptInput) -> None:
        """Accept: order in progress, restock, plan the refunds, return balances (rule 6)."""
        order = self._order()
        scope = self._scope()
        refunded = self._run.refunded_by_tender
        plan = plan_refund(
            order,
            accept.refund_method,
            amount=refundable_amount(order, scope, refunded),
            refunded_by_tender=refunded,
        )
        try:
            check_accept(accept, plan)
        except CancellationError as err:
            raise application_error(err) from None
        lines = refund_lines(self._view.cancellation_id, plan)
        balances: list[BalanceChange] = []
        for line in lines:
            balances += route_line(line, line.channel, accept.bank_account, order.customer_id)
        currency = order.currency
        view = self._next_view(
            status=CancellationStatus.IN_PROGRESS,
            order_status=OrderStatus.CANCELLATION_IN_PROGRESS,
            reason_code=accept.reason_code,
            reason=accept.reason or self._view.reason,
            customer_note=accept.customer_note,
            refund_method=accept.refund_method,
            refundable=Money(amount=plan.refundable, currency=currency),
            refunds=lines,
            needs_attention=None,
        )
        restock = (
            restock_changes(self._view.cancellation_id, order, scope) if accept.restock else []
        )
        notes = [Notification(recipient=Recipient.CUSTOMER, template="accepted")]
        self._run.restocked = restock
        await self._commit(
            view,
            event="accepted",
            actor=accept.actor,
            detail={
                "reason_code": accept.reason_code.value,
                "refund_method": accept.refund_method.value,
                "restock": accept.restock,
                "refundable": plan.refundable,
            },
            order=self._order_change(
                OrderStatus.CANCELLATION_IN_PROGRESS,
                require_unshipped=True,
                canceled_items=[
                    ItemChange(item_id=i.item_id, delta=i.quantity) for i in scope.items
                ],
            ),
            stock=restock,
            balances=balances,
            refund_lines=lines,
            notifications=notes if accept.notify_customer else [],
        )

    async def _reject(self, reject: RejectInput) -> None:
        await self._close_request(
            CancellationStatus.REJECTED,
            "rejected",
            reject.actor,
            {"reason": reject.reason},
            notify=Notification(
                recipient=Recipient.CUSTOMER,
                template="rejected",
                payload={"customer_note": reject.customer_note},
            ),
        )

    async def _withdraw(self, withdraw: WithdrawInput) -> None:
        await self._close_request(
            CancellationStatus.WITHDRAWN,
            "withdrawn",
            withdraw.actor,
            {},
            notify=Notification(recipient=Recipient.MERCHANT, template="withdrawn"),
        )

    async def _close_request(
        self,
        status: CancellationStatus,
        event: str,
        actor: str,
        detail: dict[str, Any],
        notify: Notification | None,
    ) -> None:
        """The request ends without a cancellation; the order gets its status back."""
        view = self._next_view(
            status=status,
            order_status=restorable_status(self._order()),
            needs_attention=None,
        )
        await self._commit(
            view,
            event=event,
            actor=actor,
            detail=detail,
            order=OrderChange(status=None),
            notifications=[notify] if notify else [],
        )

    async def _remind_merchant(self) -> None:
        async with self._lock:
            view = self._next_view(needs_attention=Attention.DECISION_OVERDUE)
            await self._commit(
                view,
                event="reminder_sent",
                actor="system",
                detail={"after": str(self._run.settings.request_reminder_after)},
                notifications=[Notification(recipient=Recipient.MERCHANT, template="reminder")],
            )

    async def _confirm_refund(self, confirm: ConfirmRefundInput) -> None:
        """The merchant made the bank deposit (rule 7)."""
        view = self._next_view()
        line = find_line(view, confirm.refund_id)
        line.status = RefundStatus.SUCCEEDED
        line.confirmation_reference = confirm.reference
        recount(view)
        await self._commit(
            view,
            event="refund_confirmed",
            actor=confirm.actor,
            detail={"refund_id": line.refund_id, "reference": confirm.reference},
            refund_lines=[line],
        )

    async def _retry_refund(self, retry: RetryRefundInput) -> None:
        """Retry a failed refund, or switch it to bank deposit or credits (rule 7).

        Before a card line is switched, the provider is asked what its refund id already
        did: a refund that went through after all settles the line instead (paying the
        customer twice otherwise), one still pending refuses the switch.
        """
        failed = find_line(self._view, retry.refund_id)
        switching = retry.method not in (None, RefundMethod.ORIGINAL)
        if (
            switching
            and failed.channel is RefundChannel.PROVIDER
            and failed.payment_id is not None
            and workflow.patched(RECONCILE_BEFORE_SWITCH)
        ):
            earlier = await self._provider_did(failed)
            if earlier is not None and not earlier.settled:
                raise refusal(
                    ErrorCode.INVALID_TRANSITION,
                    f"the provider is still processing refund {earlier.provider_reference} of"
                    f" {failed.refund_id}; it can't be switched until the provider decides",
                )
            if earlier is not None:
                await self._refund_reconciled(failed.refund_id, earlier.provider_reference)
                return
        view = self._next_view()
        line = find_line(view, retry.refund_id)
        line.failure = None
        balances: list[BalanceChange] = []
        if retry.method is None or retry.method is RefundMethod.ORIGINAL:
            line.status = RefundStatus.PENDING
        else:
            line.method = retry.method
            balances = route_line(
                line, retry_channel(retry.method), retry.bank_account, self._order().customer_id
            )
        view.needs_attention = (
            Attention.REFUND_FAILED
            if any(r.status is RefundStatus.FAILED for r in view.refunds)
            else None
        )
        recount(view)
        await self._commit(
            view,
            event="refund_retried",
            actor=retry.actor,
            detail={
                "refund_id": line.refund_id,
                "method": line.method.value,
            },
            balances=balances,
            refund_lines=[line],
        )

    # ------------------------------------------------------------------ commands

    async def _perform(self, action: Action, payload: Any) -> None:
        match action:
            case Action.ACCEPT:
                await self._accept(payload)
            case Action.REJECT:
                await self._reject(payload)
            case Action.WITHDRAW:
                await self._withdraw(payload)
            case Action.CONFIRM_REFUND:
                await self._confirm_refund(payload)
            case Action.RETRY_REFUND:
                await self._retry_refund(payload)
            case Action.UNDO:
                await self._undo(payload)
            case Action.REPAYMENT:
                await self._confirm_repayment(payload)
            case _:
                raise refusal(ErrorCode.INVALID_TRANSITION, f"{action.value} is not available")

    # ------------------------------------------------------------------ messages

    @workflow.query
    def status(self) -> CancellationView:
        """The cancellation view."""
        return self._snapshot()

    @workflow.update(name="opened")
    async def opened_update(self) -> CancellationView:
        """The view once the run has opened the cancellation (and applied an acceptance it
        started with), or the refusal that ended it.

        Starters send it with the start (update-with-start): one call, no polling.
        """
        await workflow.wait_condition(lambda: self._ready or self._refusal is not None)
        if self._refusal is not None:
            raise ApplicationError(
                self._refusal.message, type=self._refusal.type, non_retryable=True
            )
        return self._snapshot()

    @workflow.update(name="undo")
    async def undo_update(self, undo: UndoInput) -> CancellationView:
        """The merchant undoes the cancellation; the store must end up no poorer."""
        return await self._submit(Action.UNDO, undo)

    @undo_update.validator
    def _validate_undo(self, undo: UndoInput) -> None:
        self._check(Action.UNDO, undo, validating=True)

    @workflow.signal(name="undo")
    def undo_signal(self, undo: UndoInput) -> None:
        """Undo, without waiting for an answer."""
        self._signal(Action.UNDO, undo)

    @workflow.update(name="confirm_repayment")
    async def confirm_repayment_update(self, repayment: ConfirmRepaymentInput) -> CancellationView:
        """The customer paid again after an undo."""
        return await self._submit(Action.REPAYMENT, repayment)

    @confirm_repayment_update.validator
    def _validate_confirm_repayment(self, repayment: ConfirmRepaymentInput) -> None:
        self._check(Action.REPAYMENT, repayment, validating=True)

    @workflow.signal(name="confirm_repayment")
    def confirm_repayment_signal(self, repayment: ConfirmRepaymentInput) -> None:
        """Confirm a repayment, without waiting for an answer."""
        self._signal(Action.REPAYMENT, repayment)

    @workflow.signal(name="provider_refund_settled")
    def provider_refund_settled(self, settled: ProviderRefundSettled) -> None:
        """The provider's webhook: what became of a refund. A pending one stops polling; a
        late success or a reversal of a decided one is applied by ``run()``."""
        if settled.status == "succeeded":
            self._settled.add(settled.provider_reference)
        line = next(
            (x for x in self._view.refunds if x.provider_reference == settled.provider_reference),
            None,
        )
        if line is None or self._switched_away(line):
            return
        failed = settled.status == "failed"
        in_flight = failed and line.status is RefundStatus.PROCESSING
        # A refund the provider reversed stays failed: a success event of the same refund
        # arriving later is an older one delivered out of order (a reversal is final).
        reversed_before = (line.failure or "").startswith(REVERSED)
        late = (failed and line.status is RefundStatus.SUCCEEDED) or (
            not failed and line.status is RefundStatus.FAILED and not reversed_before
        )
        if (in_flight or late) and workflow.patched(PROVIDER_REFUND_EVENTS):
            if in_flight:
                self._run.failed_references.add(settled.provider_reference)
            else:
                self._run.provider_events.append(settled)

    @workflow.update(name="accept")
    async def accept_update(self, accept: AcceptInput) -> CancellationView:
        """The merchant accepts with a reason and a refund method."""
        return await self._submit(Action.ACCEPT, accept)

    @accept_update.validator
    def _validate_accept(self, accept: AcceptInput) -> None:
        self._check(Action.ACCEPT, accept, validating=True)

    @workflow.signal(name="accept")
    def accept_signal(self, accept: AcceptInput) -> None:
        """Accept, without waiting for an answer."""
        self._signal(Action.ACCEPT, accept)

    @workflow.update(name="reject")
    async def reject_update(self, reject: RejectInput) -> CancellationView:
        """The merchant rejects the customer's request."""
        return await self._submit(Action.REJECT, reject)

    @reject_update.validator
    def _validate_reject(self, reject: RejectInput) -> None:
        self._check(Action.REJECT, reject, validating=True)

    @workflow.signal(name="reject")
    def reject_signal(self, reject: RejectInput) -> None:
        """Reject, without waiting for an answer."""
        self._signal(Action.REJECT, reject)

    @workflow.update(name="withdraw")
    async def withdraw_update(self, withdraw: WithdrawInput) -> CancellationView:
        """The customer takes the request back."""
        return await self._submit(Action.WITHDRAW, withdraw)

    @withdraw_update.validator
    def _validate_withdraw(self, withdraw: WithdrawInput) -> None:
        self._check(Action.WITHDRAW, withdraw, validating=True)

    @workflow.signal(name="withdraw")
    def withdraw_signal(self, withdraw: WithdrawInput) -> None:
        """Withdraw, without waiting for an answer."""
        self._signal(Action.WITHDRAW, withdraw)

    @workflow.update(name="confirm_refund")
    async def confirm_refund_update(self, confirm: ConfirmRefundInput) -> CancellationView:
        """The merchant confirms a manual bank deposit."""
        return await self._submit(Action.CONFIRM_REFUND, confirm)

    @confirm_refund_update.validator
    def _validate_confirm_refund(self, confirm: ConfirmRefundInput) -> None:
        self._check(Action.CONFIRM_REFUND, confirm, validating=True)

    @workflow.signal(name="confirm_refund")
    def confirm_refund_signal(self, confirm: ConfirmRefundInput) -> None:
        """Confirm a bank deposit, without waiting for an answer."""
        self._signal(Action.CONFIRM_REFUND, confirm)

    @workflow.update(name="retry_refund")
    async def retry_refund_update(self, retry: RetryRefundInput) -> CancellationView:
        """Retry a failed refund, or switch it to bank deposit or credits."""
        return await self._submit(Action.RETRY_REFUND, retry)

    @retry_refund_update.validator
    def _validate_retry_refund(self, retry: RetryRefundInput) -> None:
        self._check(Action.RETRY_REFUND, retry, validating=True)

    @workflow.signal(name="retry_refund")
    def retry_refund_signal(self, retry: RetryRefundInput) -> None:
        """Retry a refund, without waiting for an answer."""
        self._signal(Action.RETRY_REFUND, retry)


__all__ = ["OrderCancellationWorkflow", "start_search_attributes"]
