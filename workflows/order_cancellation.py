"""The ``OrderCancellation`` workflow: one order cancellation, from request to closing.

``run()`` reads like the store-admin guide: open the cancellation, wait for the
merchant's decision, refund every tender, mark the order canceled, keep the run open
for the undo window. Signal and update handlers only queue commands; ``run()`` carries
them out one at a time, so every change of state happens in one place and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.provider import (
        AwaitSettlementInput,
        ProviderActivities,
        ProviderRefundSettled,
        RecaptureCheckInput,
        RecaptureCheckResult,
        RecaptureOutcome,
        RecapturePaymentInput,
        RefundPaymentInput,
        RefundPaymentResult,
    )
    from activities.store import (
        ApplyChangesInput,
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
        InitiatedBy,
        RefundLine,
        RefundStatus,
        RejectInput,
        RetryRefundInput,
        StartCancellationInput,
        UndoInput,
        WithdrawInput,
    )
    from domain.changes import (
        BalanceChange,
        BalanceKind,
        ChangeResult,
        ChangeSet,
        ItemChange,
        Notification,
        OrderChange,
        Recipient,
        StockChange,
    )
    from domain.errors import CancellationError, ErrorCode
    from domain.money import Money, format_money
    from domain.order import Order, OrderStatus, TenderKind
    from domain.refund_plan import RefundChannel, RefundMethod, plan_refund
    from domain.rules import allowed_actions, check_accept, refund_attention, restorable_status
    from domain.scope import (
        CancellationScope,
        refundable_amount,
        refundable_before_acceptance,
        scope_of,
    )
    from domain.shop import ShopSettings
    from workflows.search_attributes import search_attribute_updates, start_search_attributes

# ----------------------------------------------------------------------------- policies

# Store writes are short transactions; a database restart takes seconds, so retry
# quickly at first and keep retrying: a change set applies at most once anyway. The short
# timeout notices an attempt lost with a killed worker soon (the chaos run saw 35 s waits
# with 30 s).
STORE_TIMEOUT = timedelta(seconds=10)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
# Runs begun after this patch write to the store with local activities; older runs keep
# their activity tasks (replayed by tests/workflows/test_replay.py).
STORE_WRITES_LOCAL = "store-writes-local"
# A local activity's retries stay in the worker while the backoff is under the threshold,
# and wait on a workflow timer past it. Unlike an activity's, those write history (6 events
# a timer): with waits of up to 2 min a day-long database outage adds about 4,300 events to
# a waiting run, far inside Temporal's limit (docs/design.md, "Timeouts and retries").
STORE_LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
)
STORE_LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)
# With this patch the same "retry as is" sent again once the line has failed again is a new
# attempt; before it, every repeat of that body answered with the view. Decided when such a
# retry first arrives, so only runs that meet one carry the marker.
RETRY_AFTER_FAILING_AGAIN = "retry-refund-after-failing-again"
# With this patch a command queued twice before the first copy took effect (two identical
# signals, or updates without an idempotency key, in one workflow task) is carried out once;
# before it, the second copy was performed again (a retried refund could pay twice).
SKIP_QUEUED_REPEATS = "skip-queued-repeats"
# A provider call waits at most 10 s for an answer (the client's timeout); the same
# idempotency key on every attempt means a retry can never pay twice.
PROVIDER_TIMEOUT = timedelta(seconds=30)
# Provider activities heartbeat every second while a call is slow: a worker that died
# mid-call is noticed after 5 s instead of the 30 s above (docs/reliability.md).
PROVIDER_HEARTBEAT = timedelta(seconds=5)
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
# Pending refunds usually settle within minutes; the provider gives up on them after a
# week, and so do we (the line fails and a person looks at it).
SETTLEMENT_TIMEOUT = timedelta(seconds=15)
SETTLEMENT_DEADLINE = timedelta(days=7)
SETTLEMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(minutes=1),
)


@dataclass
class _Command:
    """An action waiting for ``run()``; its handler waits for ``done``."""

    action: Action
    payload: Any
    done: bool = False
    error: ApplicationError | None = None


@dataclass
class _Run:
    """What the workflow knows besides the public view."""

    order: Order | None = None
    settings: ShopSettings = field(default_factory=ShopSettings)
    refunded_by_tender: dict[str, int] = field(default_factory=dict)
    applied: list[tuple[Action, str]] = field(default_factory=list)
    """Actions that took effect, with their bodies: a repeat answers like the first."""
    restocked: list[StockChange] = field(default_factory=list)
    """What the acceptance put back in stock (an undo reserves it again)."""
    undo_attempts: int = 0
    undo: _Undo | None = None
    scope: CancellationScope | None = None


@dataclass
class _Undo:
    """What an undo did, so it can be reversed step by step."""

    attempt: int
    prior_status: CancellationStatus
    prior_order_status: OrderStatus
    prior_lines: list[RefundLine]
    reserved: list[StockChange]
    taken_back: list[BalanceChange]
    recaptured: list[RefundLine] = field(default_factory=list)
    due: int = 0
    repaid: int = 0


@workflow.defn(name="OrderCancellation")
class OrderCancellationWorkflow:
    """One cancellation of one order (see ``domain`` for the rules it follows)."""

    @workflow.init
    def __init__(self, start: StartCancellationInput) -> None:
        self._start = start
        self._view = CancellationView(
            cancellation_id=start.cancellation_id,
            shop_id=start.shop_id,
            order_id=start.order_id,
            workflow_id=workflow.info().workflow_id,
            status=CancellationStatus.REQUESTED,
            order_status=None,
            initiated_by=start.initiated_by,
            channel=start.channel,
            reason_code=start.reason_code,
            reason=start.reason,
            items=start.items,
            created_at=workflow.now(),
        )
        self._run = _Run()
        # What the search attributes say now (the client set them from this at start).
        self._published = self._view.model_copy(deep=True)
        self._commands: list[_Command] = []
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
        """Request → decision → refunds → canceled → undo window → closed."""
        try:
            await self._open()
            if start.accept is not None:
                await self._accept_at_start(start.accept)
        except ApplicationError as refusal:
            # The `opened` update answers the starter with the same refusal first.
            self._refusal = refusal
            self._refuse_queued(f"the cancellation was refused: {refusal.message}")
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
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
        self._refuse_queued(f"the cancellation is closed ({self._view.status.value})")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

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
            raise _refusal(err) from None
        self._run.order = opened.order
        self._run.settings = opened.settings
        self._run.refunded_by_tender = opened.refunded_by_tender
        # Money from the start: what accepting would refund, and 0 refunded so far.
        self._view.refundable = refundable_before_acceptance(
            opened.order, start.items, opened.refunded_by_tender
        )
        _recount(self._view)
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
                self._run.applied.append((Action.ACCEPT, _body(accept)))
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
                lambda: bool(self._commands) or self._fully_refunded() or self._has_pending(),
            )
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
                    lambda: bool(self._commands),
                    timeout=remaining,
                    timeout_summary=f"Undo window closes at {until:%Y-%m-%d %H:%M} UTC",
                )
            except TimeoutError:
                return False
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
            raise _application_error(err) from None
        lines: list[RefundLine] = []
        balances: list[BalanceChange] = []
        for n, planned in enumerate(plan.lines, start=1):
            line = RefundLine(
                refund_id=f"{self._view.cancellation_id}-r{n}",
                tender_id=planned.tender_id,
                tender_kind=planned.tender_kind,
                method=planned.method,
                channel=planned.channel,
                amount=planned.amount,
                payment_id=planned.payment_id,
            )
            self._route(line, planned.channel, accept.bank_account, balances)
            lines.append(line)
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
        skus = {item.item_id: item.sku for item in order.items}
        restock = (
            [
                StockChange(
                    sku=skus[item.item_id],
                    delta=item.quantity,
                    key=f"{self._view.cancellation_id}:restock:{item.item_id}",
                )
                for item in scope.items
            ]
            if accept.restock
            else []
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

    def _route(
        self,
        line: RefundLine,
        channel: RefundChannel,
        bank_account: Any,
        balances: list[BalanceChange],
    ) -> None:
        """Send a line to who carries it out; store balances pay out in the same step."""
        line.channel = channel
        match channel:
            case RefundChannel.PROVIDER:
                line.status = RefundStatus.PENDING
            case RefundChannel.BANK_DEPOSIT:
                line.status = RefundStatus.AWAITING_CONFIRMATION
                line.bank_account = bank_account
            case RefundChannel.POINTS | RefundChannel.CREDITS:
                kind = (
                    BalanceKind.POINTS if channel is RefundChannel.POINTS else BalanceKind.CREDITS
                )
                balances.append(
                    BalanceChange(
                        customer_id=self._order().customer_id,
                        balance=kind,
                        delta=line.amount,
                        key=f"{line.refund_id}:{kind.value}:{line.attempts}",
                    )
                )
                line.status = RefundStatus.SUCCEEDED

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
        line = _line(view, confirm.refund_id)
        line.status = RefundStatus.SUCCEEDED
        line.confirmation_reference = confirm.reference
        _recount(view)
        await self._commit(
            view,
            event="refund_confirmed",
            actor=confirm.actor,
            detail={"refund_id": line.refund_id, "reference": confirm.reference},
            refund_lines=[line],
        )

    async def _retry_refund(self, retry: RetryRefundInput) -> None:
        """Retry a failed refund, or switch it to bank deposit or credits (rule 7)."""
        view = self._next_view()
        line = _line(view, retry.refund_id)
        line.failure = None
        balances: list[BalanceChange] = []
        if retry.method is None or retry.method is RefundMethod.ORIGINAL:
            line.status = RefundStatus.PENDING
        else:
            line.method = retry.method
            channel = (
                RefundChannel.BANK_DEPOSIT
                if retry.method is RefundMethod.BANK_DEPOSIT
                else RefundChannel.CREDITS
            )
            self._route(line, channel, retry.bank_account, balances)
        view.needs_attention = (
            Attention.REFUND_FAILED
            if any(r.status is RefundStatus.FAILED for r in view.refunds)
            else None
        )
        _recount(view)
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

    # ------------------------------------------------------------------ undo (rule 11)

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
            raise _refuse(
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
                failure = _failure_text(err)
                await self._reverse_undo("undo_rolled_back", Attention.UNDO_FAILED, failure)
                raise _refuse(
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
            RecaptureCheckInput(payment_id=line.payment_id),
            task_queue=self._start.provider_task_queue,
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=PROVIDER_HEARTBEAT,
            retry_policy=PROVIDER_RETRY,
            summary=f"Ask the provider whether {line.payment_id} can be recaptured",
        )

    async def _recapture(self, line: RefundLine, attempt: int) -> None:
        assert line.payment_id is not None
        money = format_money(line.amount, self._order().currency)
        await workflow.execute_activity_method(
            ProviderActivities.recapture_payment,
            RecapturePaymentInput(
                payment_id=line.payment_id,
                amount=line.amount,
                idempotency_key=f"{line.refund_id}/undo-{attempt}/recapture",
            ),
            task_queue=self._start.provider_task_queue,
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=PROVIDER_HEARTBEAT,
            retry_policy=PROVIDER_RETRY,
            summary=f"Recapture {money} from card {line.payment_id}",
        )

    def _scope(self) -> CancellationScope:
        """The items this cancellation covers, resolved against the order at opening."""
        if self._run.scope is None:
            try:
                self._run.scope = scope_of(self._order(), self._start.items)
            except CancellationError as err:
                raise _application_error(err) from None
        return self._run.scope

    def _order_change(
        self,
        status: OrderStatus | None,
        *,
        keep: bool = False,
        require_unshipped: bool = False,
        canceled_items: list[ItemChange] | None = None,
    ) -> OrderChange:
        """An order change; a partial cancellation that leaves items keeps the status."""
        return OrderChange(
            status=status,
            keep_status=keep or not self._scope().is_last,
            require_unshipped=require_unshipped,
            canceled_items=canceled_items or [],
        )

    def _undo_state(self) -> _Undo:
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
        key = f"{self._view.cancellation_id}:undo-{attempt}"
        reserved = [
            StockChange(sku=s.sku, delta=-s.delta, key=f"{key}:reserve:{s.key}")
            for s in self._run.restocked
        ]
        taken_back = [
            BalanceChange(
                customer_id=self._order().customer_id,
                balance=(
                    BalanceKind.POINTS
                    if line.channel is RefundChannel.POINTS
                    else BalanceKind.CREDITS
                ),
                delta=-line.amount,
                key=f"{key}:take-back:{line.refund_id}",
            )
            for line in executed
            if line.channel in (RefundChannel.POINTS, RefundChannel.CREDITS)
        ]
        view = self._next_view(status=CancellationStatus.UNDOING, needs_attention=None)
        for line in view.refunds:
            if line.status in (
                RefundStatus.PENDING,
                RefundStatus.AWAITING_CONFIRMATION,
                RefundStatus.FAILED,
            ):
                line.status = RefundStatus.CANCELED
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
        self._run.undo = _Undo(
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
                refund_failures.append(f"{line.refund_id}: {_failure_text(err)}")
        if refund_failures or state.repaid:
            attention = Attention.UNDO_FAILED
        view = self._next_view(
            status=state.prior_status,
            refunds=[line.model_copy(deep=True) for line in state.prior_lines],
            repayment_due=None,
            repayment_until=None,
            needs_attention=None if attention is Attention.NONE else attention,
        )
        key = f"{self._view.cancellation_id}:undo-{state.attempt}"
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
            stock=[
                StockChange(sku=s.sku, delta=-s.delta, key=f"{key}:release:{s.key}")
                for s in state.reserved
            ],
            balances=[
                b.model_copy(update={"delta": -b.delta, "key": f"{b.key}:return"})
                for b in state.taken_back
            ],
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
                refund_id=line.refund_id,
                payment_id=line.payment_id,
                amount=line.amount,
                currency=self._order().currency,
                idempotency_key=f"{line.refund_id}/undo-{attempt}/reverse",
            ),
            task_queue=self._start.provider_task_queue,
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=PROVIDER_HEARTBEAT,
            retry_policy=PROVIDER_RETRY,
            summary=f"Refund the recaptured {money} to card {line.payment_id} again",
        )

    async def _pay_back(self, refund_id: str, attempt: int) -> None:
        """Refund or void one card tender through the provider; may settle later."""
        line = _line(self._view, refund_id)
        money = format_money(line.amount, self._order().currency)
        assert line.payment_id is not None
        try:
            result = await workflow.execute_activity_method(
                ProviderActivities.refund_payment,
                RefundPaymentInput(
                    refund_id=refund_id,
                    payment_id=line.payment_id,
                    amount=line.amount,
                    currency=self._order().currency,
                    idempotency_key=f"{refund_id}/try-{attempt}",
                ),
                task_queue=self._start.provider_task_queue,
                start_to_close_timeout=PROVIDER_TIMEOUT,
                heartbeat_timeout=PROVIDER_HEARTBEAT,
                retry_policy=PROVIDER_RETRY,
                summary=f"Refund {money} to card {line.payment_id}",
            )
            if not result.settled:
                async with self._lock:
                    _line(self._view, refund_id).provider_reference = result.provider_reference
                result = await self._await_settlement(refund_id, result, money)
        except ActivityError as err:
            await self._refund_failed(refund_id, _failure_text(err))
            return
        async with self._lock:
            line = _line(self._view, refund_id)
            line.status = RefundStatus.SUCCEEDED
            line.provider_reference = result.provider_reference
            _recount(self._view)
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
            AwaitSettlementInput(refund_id=refund_id, provider_reference=reference),
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
            line = _line(view, refund_id)
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

    # ------------------------------------------------------------------ commands

    async def _run_next_command(self) -> None:
        command = self._commands.pop(0)
        if command.action is Action.UNDO:
            # A refund in flight is waited for (rule 11): its outcome decides what to take back.
            await workflow.wait_condition(lambda: not self._in_flight())
        try:
            async with self._lock:
                if self._is_repeat(command.action, command.payload) and workflow.patched(
                    SKIP_QUEUED_REPEATS
                ):
                    # A copy queued before the first took effect: answered like the first.
                    return
                self._check(command.action, command.payload)
                await self._perform(command.action, command.payload)
                self._run.applied.append((command.action, _body(command.payload)))
        except ApplicationError as refusal:
            command.error = refusal
            workflow.logger.warning(
                "%s refused: %s (%s)", command.action.value, refusal.message, refusal.type
            )
        finally:
            command.done = True

    def _refuse_queued(self, message: str) -> None:
        """Answer the commands no one will carry out any more (the run ends)."""
        for command in self._commands:
            command.error = _refuse(ErrorCode.INVALID_TRANSITION, message)
            command.done = True
        self._commands.clear()

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
                raise _refuse(ErrorCode.INVALID_TRANSITION, f"{action.value} is not available")

    async def _submit(self, action: Action, payload: Any) -> CancellationView:
        """An update's body: queue the action and answer once it took effect."""
        if self._is_repeat(action, payload):
            return self._snapshot()
        command = _Command(action, payload)
        self._commands.append(command)
        await workflow.wait_condition(lambda: command.done)
        if command.error is not None:
            raise command.error
        return self._snapshot()

    def _signal(self, action: Action, payload: Any) -> None:
        """A signal's body: queue the action if it is allowed now, else log why not."""
        if self._is_repeat(action, payload):
            return
        try:
            self._check(action, payload)
        except ApplicationError as refusal:
            workflow.logger.warning(
                "signal %s ignored: %s (%s)", action.value, refusal.message, refusal.type
            )
            return
        self._commands.append(_Command(action, payload))

    def _is_repeat(self, action: Action, payload: Any, *, validating: bool = False) -> bool:
        """An action that took effect with the same body: answered with the view, again.

        A retry of a refund line that has failed again since is a new attempt, though its
        body is the same ("retry as is" twice). A validator can't consult the patch: it lets
        such a retry through, and the handler decides.
        """
        if (action, _body(payload)) not in self._run.applied:
            return False
        if action is Action.RETRY_REFUND:
            line = next((x for x in self._view.refunds if x.refund_id == payload.refund_id), None)
            if line is not None and line.status is RefundStatus.FAILED:
                return not validating and not workflow.patched(RETRY_AFTER_FAILING_AGAIN)
        return True

    def _check(self, action: Action, payload: Any, *, validating: bool = False) -> None:
        """Whether ``action`` is allowed now; raises the refusal (validators use it too)."""
        if self._is_repeat(action, payload, validating=validating):
            return
        if not self._opened:
            raise _refuse(
                ErrorCode.INVALID_TRANSITION, "the cancellation is still opening; try again"
            )
        if validating and action is Action.UNDO and self._undo_window_closed():
            # Only when validating: validators don't run on replay, so a history with an
            # undo signal that raced the window's end replays as it ran.
            until = self._view.undo_until
            raise _refuse(
                ErrorCode.UNDO_WINDOW_CLOSED,
                f"the undo window of {self._view.cancellation_id} closed at"
                f" {until:%Y-%m-%d %H:%M:%S} UTC; ask the customer to order again",
            )
        if action not in allowed_actions(self._view):
            raise _refuse(
                ErrorCode.INVALID_TRANSITION,
                f"can't {action.value} a cancellation that is {self._view.status.value}"
                + (
                    f" (allowed: {', '.join(a.value for a in self._view.allowed_actions)})"
                    if self._view.allowed_actions
                    else ""
                ),
            )
        if action is Action.CONFIRM_REFUND:
            line = self._find_line(payload.refund_id)
            if line.status is not RefundStatus.AWAITING_CONFIRMATION:
                raise _refuse(
                    ErrorCode.INVALID_TRANSITION,
                    f"refund {line.refund_id} is {line.status.value}, not awaiting confirmation",
                )
        if action is Action.RETRY_REFUND:
            line = self._find_line(payload.refund_id)
            if line.status is not RefundStatus.FAILED:
                raise _refuse(
                    ErrorCode.INVALID_TRANSITION,
                    f"refund {line.refund_id} is {line.status.value}; only failed refunds retry",
                )
            if payload.method is RefundMethod.BANK_DEPOSIT and payload.bank_account is None:
                raise _refuse(
                    ErrorCode.VALIDATION_ERROR, "a bank deposit needs the customer's bank_account"
                )
            if payload.method is None and line.tender_kind is not TenderKind.CARD:
                raise _refuse(
                    ErrorCode.VALIDATION_ERROR, "only card refunds can be retried as they are"
                )

    def _undo_window_closed(self) -> bool:
        """Canceled, and the shop's undo window is over (at once, for a window of zero)."""
        until = self._view.undo_until
        return (
            self._view.status is CancellationStatus.CANCELED
            and until is not None
            and until <= workflow.now()
        )

    def _find_line(self, refund_id: str) -> RefundLine:
        for line in self._view.refunds:
            if line.refund_id == refund_id:
                return line
        raise _refuse(
            ErrorCode.REFUND_NOT_FOUND,
            f"cancellation {self._view.cancellation_id} has no refund {refund_id}",
        )

    # ------------------------------------------------------------------ state helpers

    def _order(self) -> Order:
        assert self._run.order is not None, "the order is known once the cancellation opened"
        return self._run.order

    def _opening_view(self) -> CancellationView:
        """The view the store records when the cancellation opens."""
        view = self._snapshot()
        if self._start.initiated_by is InitiatedBy.CUSTOMER:
            view.order_status = OrderStatus.CANCELLATION_REQUESTED
        return view

    def _snapshot(self) -> CancellationView:
        view = self._view.model_copy(deep=True)
        view.allowed_actions = allowed_actions(view)
        return view

    def _next_view(self, **changes: Any) -> CancellationView:
        """A copy of the view with ``changes``; it replaces the view once committed."""
        view = self._view.model_copy(deep=True)
        for name, value in changes.items():
            setattr(view, name, value)
        _recount(view)
        return view

    def _fully_refunded(self) -> bool:
        return all(line.status is RefundStatus.SUCCEEDED for line in self._view.refunds)

    def _in_flight(self) -> bool:
        return any(line.status is RefundStatus.PROCESSING for line in self._view.refunds)

    def _has_pending(self) -> bool:
        return any(
            line.channel is RefundChannel.PROVIDER and line.status is RefundStatus.PENDING
            for line in self._view.refunds
        )

    async def _commit(
        self,
        view: CancellationView,
        *,
        event: str,
        actor: str,
        detail: dict[str, Any],
        order: OrderChange | None = None,
        stock: list[StockChange] | None = None,
        balances: list[BalanceChange] | None = None,
        refund_lines: list[RefundLine] | None = None,
        notifications: list[Notification] | None = None,
    ) -> None:
        """Write a transition to the store, then make ``view`` the current one.

        Raises:
            ApplicationError: The store refused (e.g. ``order_shipped``); nothing changed.
        """
        if view.status is CancellationStatus.IN_PROGRESS:
            view.needs_attention = refund_attention(view)
        entry = HistoryEntry(at=workflow.now(), event=event, actor=actor, detail=detail)
        view.history.append(entry)
        view.allowed_actions = allowed_actions(view)
        changes = ChangeSet(
            event_key=f"{view.cancellation_id}:{len(view.history):04d}:{event}",
            event=entry,
            view=view,
            customer_id=self._order().customer_id,
            order=order,
            stock=stock or [],
            balances=balances or [],
            refund_lines=refund_lines or [],
            notifications=notifications or [],
        )
        try:
            result: ChangeResult = await self._store_write(
                StoreActivities.apply_changes,
                ApplyChangesInput(shop_id=view.shop_id, order_id=view.order_id, changes=changes),
                summary=_summary(event, changes),
            )
        except ActivityError as err:
            raise _refusal(err) from None
        view.order_status = result.order_status
        self._view = view
        updates = search_attribute_updates(self._published, view)
        if updates:
            workflow.upsert_search_attributes(updates)
        self._published = view.model_copy(deep=True)
        self._describe()

    async def _store_write(self, activity: Any, arg: Any, *, summary: str) -> Any:
        """Run a store write: a local activity on this worker, or, in runs that began
        before that change, an activity task through the server.

        Store writes are short transactions on the worker's own database, idempotent by
        their keys: as local activities they cost the server no activity task and the
        history one marker instead of three events (docs/performance.md).
        """
        if workflow.patched(STORE_WRITES_LOCAL):
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_LOCAL_RETRY,
                local_retry_threshold=STORE_LOCAL_RETRY_THRESHOLD,
                summary=summary,
            )
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary=summary,
        )

    def _describe(self) -> None:
        """Say in plain words what the run waits for (the Web UI's current details)."""
        view = self._view
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
        workflow.set_current_details(text)

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
        """The provider's webhook: a pending refund settled, no need to wait for the poll."""
        if settled.status == "succeeded":
            self._settled.add(settled.provider_reference)

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


# ----------------------------------------------------------------------------- helpers


def _line(view: CancellationView, refund_id: str) -> RefundLine:
    return next(line for line in view.refunds if line.refund_id == refund_id)


def _recount(view: CancellationView) -> None:
    """``refunded`` is the sum of the lines that succeeded."""
    if view.refundable is not None:
        view.refunded = Money(
            amount=sum(r.amount for r in view.refunds if r.status is RefundStatus.SUCCEEDED),
            currency=view.refundable.currency,
        )


def _body(payload: Any) -> str:
    return str(payload.model_dump_json())


def _refuse(code: ErrorCode, message: str) -> ApplicationError:
    return ApplicationError(message, type=code.value, non_retryable=True)


def _application_error(err: CancellationError) -> ApplicationError:
    return _refuse(err.code, err.message)


def _refusal(err: ActivityError) -> ApplicationError:
    """The store's refusal, as the workflow's own typed error."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(f"store step failed: {err.message}", type="store_failed")


def _failure_text(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}"
    return str(cause or err)


def _summary(event: str, changes: ChangeSet) -> str:
    """One line an operator reads in the Web UI next to the activity."""
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


__all__ = ["OrderCancellationWorkflow", "start_search_attributes"]
