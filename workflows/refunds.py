"""Paying a card tender back through the provider (docs/rules.md, rule 7): one refund or
void per line, its settlement when the provider answers later, and a failure that needs a
person.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.provider import (
        AwaitSettlementInput,
        FindRefundInput,
        ProviderActivities,
        ProviderRefundSettled,
        RefundPaymentInput,
        RefundPaymentResult,
    )
    from domain.cancellation import (
        Attention,
        CancellationStatus,
        HistoryEntry,
        RefundLine,
        RefundStatus,
    )
    from domain.changes import (
        Notification,
        Recipient,
    )
    from domain.errors import FailureType
    from domain.money import format_money
    from domain.order import OrderStatus
    from domain.refund_plan import RefundChannel
    from domain.rules import REVERSED
    from domain.transitions import (
        find_line,
        recount,
    )
    from workflows.core import CancellationCore, failure_text
    from workflows.policies import (
        PROVIDER_EVENTS_ON_PROVIDER_LINES,
        PROVIDER_HEARTBEAT,
        PROVIDER_OUTAGE_ALERT,
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
        refund = RefundPaymentInput(
            shop_id=self._view.shop_id,
            refund_id=refund_id,
            payment_id=line.payment_id,
            amount=line.amount,
            currency=self._order().currency,
            idempotency_key=f"{refund_id}/try-{attempt}",
            attempt=attempt,
        )
        summary = f"Refund {money} to card {line.payment_id}"
        try:
            try:
                result = await workflow.execute_activity_method(
                    ProviderActivities.refund_payment,
                    refund,
                    **provider_call(
                        self._start.provider_task_queue, alert_after=PROVIDER_OUTAGE_ALERT
                    ),
                    summary=summary,
                )
            except ActivityError as err:
                # Out of time (schedule-to-close): Temporal reports the last attempt's
                # failure as the cause, the timeout in the retry state.
                if not (
                    isinstance(err.cause, ActivityTimeout) or err.retry_state is RetryState.TIMEOUT
                ):
                    raise
                # The provider has not answered for an hour: say so, and keep asking with
                # the same idempotency key until it does.
                await self._provider_outage(refund_id, Attention.PROVIDER_UNAVAILABLE)
                result = await workflow.execute_activity_method(
                    ProviderActivities.refund_payment,
                    refund,
                    **provider_call(self._start.provider_task_queue),
                    summary=summary + " (the provider was away)",
                )
                await self._provider_outage(refund_id, None)
            if not result.settled:
                async with self._lock:
                    find_line(self._view, refund_id).provider_reference = result.provider_reference
                result = await self._await_settlement(refund_id, result, money)
        except ActivityError as err:
            await self._refund_failed(refund_id, failure_text(err))
            return
        except ApplicationError as err:  # the provider's webhook said it failed
            await self._refund_failed(refund_id, f"{err.type}: {err.message}")
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
            retry_policy=SETTLEMENT_RETRY,
            summary=f"Wait for provider to settle refund of {money} ({reference})",
        )
        await workflow.wait_condition(
            lambda: (
                poll.done()
                or reference in self._settled
                or reference in self._run.failed_references
            )
        )
        if poll.done():
            return await poll
        # The webhook came first: stop polling (the provider said what became of it).
        poll.cancel()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await poll
        if reference in self._run.failed_references:
            raise ApplicationError(
                f"the provider reports refund {reference} failed", type=FailureType.REFUND_FAILED
            )
        return RefundPaymentResult(
            operation=pending.operation, provider_reference=reference, settled=True
        )

    async def _apply_provider_events(self) -> None:
        """Move decided refund lines to what the provider says now (a late word)."""
        while self._run.provider_events:
            event = self._run.provider_events.pop(0)
            async with self._lock:
                line = next(
                    (
                        x
                        for x in self._view.refunds
                        if x.provider_reference == event.provider_reference
                    ),
                    None,
                )
                if line is None or self._switched_away(line):
                    continue
                if event.status == "succeeded" and line.status is RefundStatus.FAILED:
                    await self._late_success(line.refund_id, event)
                elif event.status == "failed" and line.status is RefundStatus.SUCCEEDED:
                    await self._refund_reversed(line.refund_id, event)

    def _switched_away(self, line: RefundLine) -> bool:
        """The line no longer goes through the provider (the merchant switched it to credits
        or a bank deposit): the provider's word on its old refund is not about it."""
        return line.channel is not RefundChannel.PROVIDER and workflow.patched(
            PROVIDER_EVENTS_ON_PROVIDER_LINES
        )

    async def _late_success(self, refund_id: str, event: ProviderRefundSettled) -> None:
        """The provider settled a refund after we had marked it failed: it succeeded."""
        await self._succeeded_after_all(
            refund_id, "refund_succeeded_late", event.provider_reference
        )

    async def _refund_reversed(self, refund_id: str, event: ProviderRefundSettled) -> None:
        """The provider reversed a refund that had succeeded: the customer is owed it again,
        so the cancellation is refunding again (a canceled one too) until a person acts."""
        if self._view.status not in (CancellationStatus.IN_PROGRESS, CancellationStatus.CANCELED):
            workflow.logger.warning(
                "refund %s reversed while %s: left to a person", refund_id, self._view.status
            )
            return
        view = self._next_view(
            status=CancellationStatus.IN_PROGRESS, canceled_at=None, undo_until=None
        )
        line = find_line(view, refund_id)
        line.status = RefundStatus.FAILED
        line.failure = (
            f"{REVERSED}: the provider reversed this refund after it succeeded"
            f" ({event.failure_code or 'no reason given'}); the customer is owed it again"
        )
        recount(view)
        was_canceled = self._view.status is CancellationStatus.CANCELED
        await self._commit(
            view,
            event="refund_reversed",
            actor="system",
            detail={"refund_id": refund_id, "provider_reference": event.provider_reference},
            order=(
                self._order_change(OrderStatus.CANCELLATION_IN_PROGRESS) if was_canceled else None
            ),
            refund_lines=[line],
            notifications=[
                Notification(
                    recipient=Recipient.MERCHANT,
                    template="refund_failed",
                    payload={"refund_id": refund_id, "amount": line.amount, "reversed": True},
                )
            ],
        )

    async def _provider_did(self, line: RefundLine) -> RefundPaymentResult | None:
        """What the provider did for ``line``'s refund id (by its metadata), if anything."""
        assert line.payment_id is not None
        return await workflow.execute_activity_method(
            ProviderActivities.find_refund,
            FindRefundInput(
                shop_id=self._view.shop_id, refund_id=line.refund_id, payment_id=line.payment_id
            ),
            **provider_call(self._start.provider_task_queue),
            summary=f"Ask the provider what refund {line.refund_id} already did",
        )

    async def _refund_reconciled(self, refund_id: str, reference: str) -> None:
        """The provider paid a line we had marked failed: it succeeded."""
        await self._succeeded_after_all(refund_id, "refund_reconciled", reference, record=True)

    async def _succeeded_after_all(
        self, refund_id: str, event: str, reference: str, *, record: bool = False
    ) -> None:
        """Mark a line we had marked failed as succeeded (``record``: keep the provider's
        reference on the line too) and commit ``event``."""
        view = self._next_view()
        line = find_line(view, refund_id)
        line.status = RefundStatus.SUCCEEDED
        line.failure = None
        if record:
            line.provider_reference = reference
        recount(view)
        await self._commit(
            view,
            event=event,
            actor="system",
            detail={"refund_id": refund_id, "provider_reference": reference},
            refund_lines=[line],
        )

    async def _provider_outage(self, refund_id: str, attention: Attention | None) -> None:
        """Flag the run while the provider is away; clear the flag when it answers."""
        async with self._lock:
            view = self._next_view(needs_attention=attention)
            await self._commit(
                view,
                event="provider_unavailable" if attention else "provider_answered",
                actor="system",
                detail={"refund_id": refund_id, "after": str(PROVIDER_OUTAGE_ALERT)},
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
