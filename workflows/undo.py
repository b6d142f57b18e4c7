"""Undoing a cancellation without the store getting poorer (docs/rules.md, rule 11).

Check every executed provider refund with the provider first; hold stock and balances in
one store transaction; recapture; then either finish, or wait for the customer to pay
again, and reverse every step, last first, when that lapses or a recapture is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.provider import (
        ProviderActivities,
        RecaptureCheckInput,
        RecaptureCheckResult,
        RecaptureOutcome,
        RecapturePaymentInput,
        RefundPaymentInput,
    )
    from domain.cancellation import (
        Attention,
        CancellationStatus,
        ConfirmRepaymentInput,
        RefundLine,
        RefundStatus,
        UndoInput,
    )
    from domain.changes import (
        ItemChange,
        Notification,
        OrderChange,
        Recipient,
    )
    from domain.errors import ErrorCode
    from domain.money import Money, format_money
    from domain.order import OrderStatus
    from domain.refund_plan import RefundChannel
    from domain.transitions import (
        cancel_unexecuted,
        undo_holds,
        undo_reversal,
    )
    from workflows.commands import refusal
    from workflows.core import (
        CancellationCore,
        UndoState,
        failure_text,
    )
    from workflows.policies import (
        provider_call,
    )


class UndoSteps(CancellationCore):
    """The undo steps of ``OrderCancellationWorkflow``."""

    async def _undo(self, undo: UndoInput) -> None:
        """Undo without the store getting poorer: check, hold, recapture, then restore.

        Every provider refund or void is checked before anything changes; where one
        can't be recaptured the undo is refused, unless the merchant asks the customer
        to pay again. A recapture the provider refuses after all rolls back what the undo
        did so far, in reverse order.
        """
        self._run.undo_attempts += 1
        attempt = self._run.undo_attempts
        executed = [line for line in self._view.refunds if line.status is RefundStatus.SUCCEEDED]
        by_provider = [line for line in executed if line.channel is RefundChannel.PROVIDER]
        checks = await asyncio.gather(*(self._check_recapture(line) for line in by_provider))
        lost = [
            (line, check)
            for line, check in zip(by_provider, checks, strict=True)
            if check.outcome is not RecaptureOutcome.RESTORABLE
        ]
        if lost and not undo.require_repayment:
            names = ", ".join(f"{line.payment_id} ({check.outcome.value})" for line, check in lost)
            raise refusal(
                ErrorCode.RECAPTURE_UNAVAILABLE,
                f"the provider can't recapture {names}; undo with require_repayment to have"
                " the customer pay again, or ask them to order again",
            )
        await self._hold_for_undo(undo, attempt, executed, checks)
        state = self._undo_state()
        lost_lines = {line.refund_id for line, _ in lost}
        for line in by_provider:
            if line.refund_id in lost_lines:
                continue
            try:
                await self._recapture(line, attempt)
            except ActivityError as err:
                failure = failure_text(err)
                await self._reverse_undo("undo_rolled_back", Attention.UNDO_FAILED, failure)
                raise refusal(
                    ErrorCode.RECAPTURE_UNAVAILABLE,
                    f"the provider refused to recapture {line.payment_id} ({failure});"
                    " the undo was rolled back",
                ) from None
            state.recaptured.append(line)
        state.due = sum(line.amount for line in executed if line.refund_id in lost_lines) + sum(
            line.amount for line in executed if line.channel is RefundChannel.BANK_DEPOSIT
        )
        if state.due:
            await self._await_repayment(undo)
        else:
            await self._finish_undo(undo.actor, undo.customer_note)

    async def _check_recapture(self, line: RefundLine) -> RecaptureCheckResult:
        assert line.payment_id is not None
        return await workflow.execute_activity_method(
            ProviderActivities.check_recapture,
            RecaptureCheckInput(shop_id=self._view.shop_id, payment_id=line.payment_id),
            **provider_call(self._start.provider_task_queue),
            summary=f"Ask the provider whether {line.payment_id} can be recaptured",
        )

    async def _recapture(self, line: RefundLine, attempt: int) -> None:
        assert line.payment_id is not None
        money = format_money(line.amount, self._order().currency)
        await workflow.execute_activity_method(
            ProviderActivities.recapture_payment,
            RecapturePaymentInput(
                shop_id=self._view.shop_id,
                payment_id=line.payment_id,
                amount=line.amount,
                idempotency_key=f"{line.refund_id}/undo-{attempt}/recapture",
            ),
            **provider_call(self._start.provider_task_queue),
            summary=f"Recapture {money} from card {line.payment_id}",
        )

    def _undo_state(self) -> UndoState:
        assert self._run.undo is not None, "an undo is under way"
        return self._run.undo

    async def _hold_for_undo(
        self,
        undo: UndoInput,
        attempt: int,
        executed: list[RefundLine],
        checks: list[RecaptureCheckResult],
    ) -> None:
        """Cancel unexecuted refunds, reserve the stock again, take points and credits back.

        One store transaction: ``out_of_stock`` (or spent balances) refuse it whole.
        """
        reserved, taken_back = undo_holds(
            self._view.cancellation_id,
            attempt,
            self._run.restocked,
            executed,
            self._order().customer_id,
        )
        view = self._next_view(status=CancellationStatus.UNDOING, needs_attention=None)
        cancel_unexecuted(view)
        prior_lines = [line.model_copy(deep=True) for line in self._view.refunds]
        prior = (self._view.status, self._view.order_status or OrderStatus.CANCELED)
        await self._commit(
            view,
            event="undo_started",
            actor=undo.actor,
            detail={
                "reason": undo.reason,
                "require_repayment": undo.require_repayment,
                "recapture": {c.payment_id: c.outcome.value for c in checks},
            },
            order=self._order_change(
                None,
                keep=True,
                canceled_items=[
                    ItemChange(item_id=i.item_id, delta=-i.quantity) for i in self._scope().items
                ],
            ),
            stock=reserved,
            balances=taken_back,
            refund_lines=view.refunds,
        )
        self._run.undo = UndoState(
            attempt=attempt,
            prior_status=prior[0],
            prior_order_status=prior[1],
            prior_lines=prior_lines,
            reserved=reserved,
            taken_back=taken_back,
        )

    async def _await_repayment(self, undo: UndoInput) -> None:
        """Money that left by bank deposit, or can't be recaptured, must be paid again."""
        state = self._undo_state()
        until = workflow.now() + self._run.settings.repayment_window
        currency = self._order().currency
        view = self._next_view(
            status=CancellationStatus.AWAITING_REPAYMENT,
            repayment_due=Money(amount=state.due, currency=currency),
            repayment_until=until,
        )
        await self._commit(
            view,
            event="repayment_requested",
            actor="system",
            detail={"due": state.due, "until": until.isoformat()},
            order=self._order_change(OrderStatus.AWAITING_PAYMENT),
            notifications=[
                Notification(
                    recipient=Recipient.CUSTOMER,
                    template="repayment_requested",
                    payload={
                        "amount": state.due,
                        "currency": currency,
                        "customer_note": undo.customer_note,
                    },
                )
            ],
        )

    async def _confirm_repayment(self, repayment: ConfirmRepaymentInput) -> None:
        """The customer paid (part of) what they owe; all of it completes the undo."""
        state = self._undo_state()
        state.repaid += repayment.amount
        remaining = state.due - state.repaid
        if remaining > 0:
            view = self._next_view(
                repayment_due=Money(amount=remaining, currency=self._order().currency)
            )
            await self._commit(
                view,
                event="repayment_received",
                actor=repayment.actor,
                detail={"reference": repayment.reference, "amount": repayment.amount},
            )
            return
        await self._finish_undo(
            repayment.actor, None, {"reference": repayment.reference, "amount": repayment.amount}
        )

    async def _finish_undo(
        self, actor: str, customer_note: str | None, detail: dict[str, Any] | None = None
    ) -> None:
        """Everything is back: the order returns to its status before the cancellation."""
        view = self._next_view(
            status=CancellationStatus.UNDONE, repayment_due=None, repayment_until=None
        )
        await self._commit(
            view,
            event="undone",
            actor=actor,
            detail=detail or {},
            order=OrderChange(status=None),
            notifications=[
                Notification(
                    recipient=Recipient.CUSTOMER,
                    template="undone",
                    payload={"customer_note": customer_note},
                )
            ],
        )

    async def _reverse_undo(
        self, event: str, attention: Attention, failure: str | None = None
    ) -> None:
        """Reverse every step of the undo, last first: refund recaptures, release stock,
        return points and credits, and go back to where the cancellation was."""
        state = self._undo_state()
        refund_failures: list[str] = []
        for line in reversed(state.recaptured):
            try:
                await self._refund_recapture(line, state.attempt)
            except ActivityError as err:
                refund_failures.append(f"{line.refund_id}: {failure_text(err)}")
        if refund_failures or state.repaid:
            attention = Attention.UNDO_FAILED
        view = self._next_view(
            status=state.prior_status,
            refunds=[line.model_copy(deep=True) for line in state.prior_lines],
            repayment_due=None,
            repayment_until=None,
            needs_attention=None if attention is Attention.NONE else attention,
        )
        stock, balances = undo_reversal(
            self._view.cancellation_id, state.attempt, state.reserved, state.taken_back
        )
        await self._commit(
            view,
            event=event,
            actor="system",
            detail={
                "failure": failure,
                "refund_failures": refund_failures,
                "repaid_to_return": state.repaid,
            },
            order=self._order_change(
                state.prior_order_status,
                canceled_items=[
                    ItemChange(item_id=i.item_id, delta=i.quantity) for i in self._scope().items
                ],
            ),
            stock=stock,
            balances=balances,
            notifications=[
                Notification(
                    recipient=Recipient.MERCHANT, template=event, payload={"failure": failure}
                )
            ],
        )
        self._run.undo = None

    async def _refund_recapture(self, line: RefundLine, attempt: int) -> None:
        assert line.payment_id is not None
        money = format_money(line.amount, self._order().currency)
        await workflow.execute_activity_method(
            ProviderActivities.refund_payment,
            RefundPaymentInput(
                shop_id=self._view.shop_id,
                # Its own id: the lookup before a retry must find this refund, not the
                # line's original one (which succeeded long ago).
                refund_id=f"{line.refund_id}/undo-{attempt}/reverse",
                payment_id=line.payment_id,
                amount=line.amount,
                currency=self._order().currency,
                idempotency_key=f"{line.refund_id}/undo-{attempt}/reverse",
            ),
            **provider_call(self._start.provider_task_queue),
            summary=f"Refund the recaptured {money} to card {line.payment_id} again",
        )
