"""What every step of the cancellation workflow shares: its state, and the one way a
transition is written (``_commit``: the store first, then the view, the search attributes
and the current details).

``OrderCancellationWorkflow`` is built from this core, the refund steps
(``workflows.refunds``) and the undo steps (``workflows.undo``); only its own module holds
the process and the message handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.provider import ProviderRefundSettled
    from activities.store import (
        ApplyChangesInput,
        StoreActivities,
    )
    from domain.cancellation import (
        Action,
        CancellationStatus,
        CancellationView,
        HistoryEntry,
        InitiatedBy,
        RefundLine,
        RefundStatus,
        StartCancellationInput,
    )
    from domain.changes import (
        BalanceChange,
        ChangeResult,
        ChangeSet,
        ItemChange,
        Notification,
        OrderChange,
        StockChange,
    )
    from domain.errors import CancellationError, FailureType
    from domain.order import Order, OrderStatus
    from domain.refund_plan import RefundChannel
    from domain.rules import allowed_actions, refund_attention
    from domain.scope import CancellationScope, scope_of
    from domain.shop import ShopSettings
    from domain.transitions import (
        change_summary,
        current_details,
        fully_refunded,
        recount,
    )
    from workflows.commands import ActionInput, CommandQueue, refusal
    from workflows.policies import (
        STORE_LOCAL_RETRY,
        STORE_LOCAL_RETRY_THRESHOLD,
        STORE_RETRY,
        STORE_TIMEOUT,
        STORE_WRITES_LOCAL,
    )
    from workflows.search_attributes import search_attribute_updates


@dataclass
class RunState:
    """What the workflow knows besides the public view."""

    order: Order | None = None
    settings: ShopSettings = field(default_factory=ShopSettings)
    refunded_by_tender: dict[str, int] = field(default_factory=dict)
    applied: list[tuple[Action, str]] = field(default_factory=list)
    """Actions that took effect, with their bodies: a repeat answers like the first."""
    restocked: list[StockChange] = field(default_factory=list)
    """What the acceptance put back in stock (an undo reserves it again)."""
    undo_attempts: int = 0
    failed_references: set[str] = field(default_factory=set)
    """Provider refunds the provider's webhook reported as failed while we polled them."""
    provider_events: list[ProviderRefundSettled] = field(default_factory=list)
    """The provider's late word on refunds already decided, for ``run()`` to apply."""
    undo: UndoState | None = None
    scope: CancellationScope | None = None


@dataclass
class UndoState:
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


_In = TypeVar("_In")
_Out = TypeVar("_Out")


class CancellationCore:
    """State and shared steps of one cancellation run (see ``OrderCancellationWorkflow``)."""

    _start: StartCancellationInput
    _view: CancellationView
    """The public view; replaced only by ``_commit`` (and by refund outcomes under the lock)."""
    _run: RunState
    _published: CancellationView
    """What the search attributes say now."""
    _commands: CommandQueue
    _opened: bool
    _ready: bool
    _refusal: ApplicationError | None
    _tasks: set[asyncio.Task[None]]
    _settled: set[str]
    """Provider refunds whose settlement the provider's webhook reported."""
    _lock: asyncio.Lock
    """Provider outcomes arrive while a command may be mid-transition; the lock keeps each
    transition's read-decide-write of the view whole."""

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
        recount(view)
        return view

    def _fully_refunded(self) -> bool:
        return fully_refunded(self._view)

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
                summary=change_summary(event, changes),
            )
        except ActivityError as err:
            raise store_refusal(err) from None
        view.order_status = result.order_status
        self._view = view
        updates = search_attribute_updates(self._published, view)
        if updates:
            workflow.upsert_search_attributes(updates)
        self._published = view.model_copy(deep=True)
        self._describe()

    async def _store_write(
        self,
        activity: Callable[[StoreActivities, _In], Awaitable[_Out]],
        arg: _In,
        *,
        summary: str,
    ) -> _Out:
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

    _perform: Callable[[Action, ActionInput], Awaitable[None]]
    """Carry one action out: the process (``OrderCancellationWorkflow``) defines it."""

    def _describe(self) -> None:
        """Say in plain words what the run waits for (the Web UI's current details)."""
        workflow.set_current_details(current_details(self._view))

    def _scope(self) -> CancellationScope:
        """The items this cancellation covers, resolved against the order at opening."""
        if self._run.scope is None:
            try:
                self._run.scope = scope_of(self._order(), self._start.items)
            except CancellationError as err:
                raise application_error(err) from None
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


# ----------------------------------------------------------------------------- helpers


def application_error(err: CancellationError) -> ApplicationError:
    return refusal(err.code, err.message)


def store_refusal(err: ActivityError) -> ApplicationError:
    """The store's refusal, as the workflow's own typed error."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(f"store step failed: {err.message}", type=FailureType.STORE_FAILED)


def failure_text(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}"
    return str(cause or err)
