"""Paying a card tender back through the provider (docs/rules.md, rule 7): one refund or
void per line, its settlement when the provider answers later, and a failure that needs a
person.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.provider import (
        AwaitSettlementInput,
        ProviderActivities,
        RefundPaymentInput,
        RefundPaymentResult,
    )
    from domain.cancellation import (
        Attention,
        HistoryEntry,
        RefundStatus,
    )
    from domain.changes import (
        Notification,
        Recipient,
    )
    from domain.money import format_money
    from domain.transitions import (
        find_line,
        recount,
    )
    from workflows.core import CancellationCore, failure_text
    from workflows.policies import (
        PROVIDER_HEARTBEAT,
        SETTLEMENT_DEADLINE,
        SETTLEMENT_RETRY,
        SETTLEMENT_TIMEOUT,
        provider_call,
    )


class RefundSteps(CancellationCore):
    """The provider refund steps of ``OrderCancellationWorkflow``."""

    async def _pay_back(self, refund_id: str, attempt: int) -> None:
        """Refund or void one card tender through the provider; may settle later."""
        line = find_line(self._view, refund_id)
        money = format_money(line.amount, self._order().currency)
        assert line.payment_id is not None
        try:
            result = await workflow.execute_activity_method(
                ProviderActivities.refund_payment,
                RefundPaymentInput(
                    shop_id=self._view.shop_id,
                    refund_id=refund_id,
                    payment_id=line.payment_id,
                    amount=line.amount,
                    currency=self._order().currency,
                    idempotency_key=f"{refund_id}/try-{attempt}",
                ),
                **provider_call(self._start.provider_task_queue),
                summary=f"Refund {money} to card {line.payment_id}",
            )
            if not result.settled:
                async with self._lock:
                    find_line(self._view, refund_id).provider_reference = result.provider_reference
                result = await self._await_settlement(refund_id, result, money)
        except ActivityError as err:
            await self._refund_failed(refund_id, failure_text(err))
            return
        async with self._lock:
            line = find_line(self._view, refund_id)
            line.status = RefundStatus.SUCCEEDED
            line.provider_reference = result.provider_reference
            recount(self._view)
            self._view.history.append(
                HistoryEntry(
                    at=workflow.now(),
                    event="refund_succeeded",
                    actor="system",
                    detail={"refund_id": refund_id, "operation": result.operation.value},
                )
            )
            self._describe()

    async def _await_settlement(
        self, refund_id: str, pending: RefundPaymentResult, money: str
    ) -> RefundPaymentResult:
        """Poll the provider until the refund settles, unless its webhook says so first."""
        reference = pending.provider_reference
        poll = workflow.start_activity_method(
            ProviderActivities.await_refund_settlement,
            AwaitSettlementInput(
                shop_id=self._view.shop_id, refund_id=refund_id, provider_reference=reference
            ),
            task_queue=self._start.provider_task_queue,
            start_to_close_timeout=SETTLEMENT_TIMEOUT,
            heartbeat_timeout=PROVIDER_HEARTBEAT,
            schedule_to_close_timeout=SETTLEMENT_DEADLINE,
            retry_policy=SETTLEMENT_RETRY,
            summary=f"Wait for provider to settle refund of {money} ({reference})",
        )
        await workflow.wait_condition(lambda: poll.done() or reference in self._settled)
        if poll.done():
            return await poll
        # The webhook came first: stop polling (the provider said the money moved).
        poll.cancel()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await poll
        return RefundPaymentResult(
            operation=pending.operation, provider_reference=reference, settled=True
        )

    async def _refund_failed(self, refund_id: str, failure: str) -> None:
        """A refund failed for good: flag the run and tell the merchant (rule 7)."""
        async with self._lock:
            view = self._next_view(needs_attention=Attention.REFUND_FAILED)
            line = find_line(view, refund_id)
            line.status = RefundStatus.FAILED
            line.failure = failure
            await self._commit(
                view,
                event="refund_failed",
                actor="system",
                detail={"refund_id": refund_id, "failure": failure},
                refund_lines=[line],
                notifications=[
                    Notification(
                        recipient=Recipient.MERCHANT,
                        template="refund_failed",
                        payload={"refund_id": refund_id, "amount": line.amount},
                    )
                ],
            )
