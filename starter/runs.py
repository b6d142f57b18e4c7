"""The client's side of one cancellation's Temporal run: what it starts with, watching it
open, the handle pinned to the run the store's row names, its live (or stored) view, the
updates that carry out the actions, and the run's failures as the client's typed errors.

:class:`~starter.client.CancellationClient` drives cancellations through these.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from activities.database import CancellationRow
from domain.cancellation import (
    Action,
    CancellationStatus,
    CancellationView,
    StartCancellationInput,
)
from domain.errors import CancellationError, ErrorCode, as_error_code
from domain.money import Money
from domain.order import Order
from domain.scope import refundable_before_acceptance
from domain.transitions import requested_view
from workflows.order_cancellation import OrderCancellationWorkflow

_Body = TypeVar("_Body", bound=BaseModel)
"""The body of one of the run's updates."""

log = logging.getLogger("starter.client")


@dataclass(frozen=True)
class Step(Generic[_Body]):
    """One of the run's updates, and the action a cancellation's view allows it as."""

    action: Action
    # The SDK types a handler's result as its coroutine; the update answers the view.
    update: UpdateMethodMultiParam[[OrderCancellationWorkflow, _Body], Any]


# ---------------------------------------------------------------------- starting


def initial_view(start: StartCancellationInput, order: Order) -> CancellationView:
    """The view of a run that has not opened yet: its first search attributes, or the answer
    when no worker took the run up in time. Its money is what accepting would refund before
    any earlier cancellation's refunds count; the run's own view is exact once it opens."""
    return requested_view(
        start,
        workflow_id=start.cancellation_id,
        refundable=refundable_before_acceptance(order, start.items, {}),
        refunded=Money(amount=0, currency=order.currency),
    )


def static_summary(start: StartCancellationInput, order: Order) -> str:
    who = "Customer request" if start.initiated_by == "customer" else "Merchant cancellation"
    return f"{who}: order {start.order_id} of shop {start.shop_id} ({order.currency})"


def static_details(start: StartCancellationInput) -> str:
    reason = start.reason_code.value if start.reason_code else "no reason code"
    return (
        f"Shop: {start.shop_id}\nOrder: {start.order_id}\n"
        f"Started by: {start.actor} via {start.channel.value}\nReason: {reason}"
    )


async def wait_opened(
    handle: WorkflowHandle[Any, CancellationView],
    start: StartCancellationInput,
    *,
    accepted: bool,
    wait: float,
) -> CancellationView:
    """Answer once the run has opened (and applied a starting acceptance)."""
    delay = 0.02
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            view = await handle.query(OrderCancellationWorkflow.status)
        except RPCError as err:
            raise rpc_error(err) from None
        if (view.shop_id, view.order_id) != (start.shop_id, start.order_id):
            # Only a release-1 id can name another shop's run; never show that run.
            raise CancellationError(
                ErrorCode.INVALID_TRANSITION,
                f"cancellation id {start.cancellation_id} is taken by another order;"
                " nothing was started",
            )
        ready = view.order_status is not None and (
            not accepted or view.status is not CancellationStatus.REQUESTED
        )
        if ready or view.closed:
            return view
        description = await handle.describe()
        if description.status is not None and description.status.name != "RUNNING":
            await _raise_run_failure(handle)
        if asyncio.get_running_loop().time() > deadline:
            return view
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)


# ---------------------------------------------------------------------- a started run


def run_handle(temporal: Client, row: CancellationRow) -> WorkflowHandle[Any, CancellationView]:
    """The run the store's row names: pinned to its run id once the run recorded it,
    so a later run that reuses the workflow id is never read or acted on."""
    return temporal.get_workflow_handle_for(
        OrderCancellationWorkflow.run, row.cancellation_id, run_id=row.run_id
    )


async def current_view(temporal: Client, row: CancellationRow) -> CancellationView:
    """The live view while the run is open; the stored one after it closed."""
    handle = run_handle(temporal, row)
    try:
        view = await handle.query(OrderCancellationWorkflow.status)
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            # Temporal is away: the projection is the best answer we have.
            return row.view
        if err.status is RPCStatusCode.NOT_FOUND:
            return closed_if_done(row.view)
        raise rpc_error(err) from None
    except Exception:  # a closed run whose history can't be queried right now
        return closed_if_done(row.view)
    if (view.shop_id, view.order_id) != (row.view.shop_id, row.view.order_id):
        # A release-1 id reused by another shop's run: that run is not ours to show.
        return closed_if_done(row.view)
    return view


async def send_update(
    temporal: Client,
    row: CancellationRow,
    step: Step[_Body],
    body: _Body,
    idempotency_key: str | None,
) -> CancellationView:
    """Send one of the run's updates (its typed handle) and answer with the view.

    ``idempotency_key`` is the update id: Temporal itself answers a repeat once.
    """
    handle = run_handle(temporal, row)
    if row.run_id is None:
        await _check_owner(temporal, row)
    try:
        view: CancellationView = await handle.execute_update(step.update, body, id=idempotency_key)
        return view
    except WorkflowUpdateFailedError as err:
        refusal = update_refusal(err)
        if refusal.code is ErrorCode.INVALID_TRANSITION and step.action in (
            row.view.allowed_actions
        ):
            # The store committed a step the run has not taken up yet (its worker died
            # between the two): the list allowed what the run refused, for a few seconds.
            raise CancellationError(
                ErrorCode.INVALID_TRANSITION,
                f"{refusal.message}; the cancellation is still finishing its last step,"
                " try again in a few seconds",
            ) from None
        raise refusal from None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            view = closed_if_done(row.view)
            if step.action is Action.UNDO and view.status is CancellationStatus.CANCELED:
                raise CancellationError(
                    ErrorCode.UNDO_WINDOW_CLOSED,
                    f"the undo window of {row.cancellation_id} closed at"
                    f" {view.undo_until:%Y-%m-%d %H:%M} UTC; ask the customer to order again",
                ) from None
            raise CancellationError(
                ErrorCode.INVALID_TRANSITION,
                f"cancellation {row.cancellation_id} is closed ({view.status.value});"
                f" {step.action.value} is no longer possible",
            ) from None
        raise rpc_error(err) from None


async def _check_owner(temporal: Client, row: CancellationRow) -> None:
    """A row no run has pinned yet: make sure the run under its id is this order's."""
    try:
        view = await run_handle(temporal, row).query(OrderCancellationWorkflow.status)
    except RPCError:
        return  # no run to act on: the update answers for itself
    if (view.shop_id, view.order_id) != (row.view.shop_id, row.view.order_id):
        raise CancellationError(
            ErrorCode.INVALID_TRANSITION,
            f"cancellation {row.cancellation_id} names another order's run; nothing was changed",
        )


# ---------------------------------------------------------------------- views and failures


def closed_if_done(view: CancellationView) -> CancellationView:
    """Stored views of finished runs say so; a canceled one closes with its undo window."""
    terminal = view.status in (
        CancellationStatus.REJECTED,
        CancellationStatus.WITHDRAWN,
        CancellationStatus.UNDONE,
    )
    expired = view.undo_until is not None and view.undo_until <= datetime.now(UTC)
    if terminal or expired:
        return view.model_copy(update={"closed": True, "allowed_actions": []})
    return view


def is_unknown_update(err: WorkflowUpdateFailedError) -> bool:
    """The run's worker predates the update (a rolling deploy)."""
    return isinstance(err.cause, ApplicationError) and "expected but not found" in str(
        err.cause.message
    )


def update_refusal(err: WorkflowUpdateFailedError) -> CancellationError:
    return _as_cancellation_error(err.cause, err)


async def _raise_run_failure(handle: WorkflowHandle[Any, CancellationView]) -> None:
    try:
        await handle.result()
    except WorkflowFailureError as err:
        raise _as_cancellation_error(err.cause, err) from None


def _as_cancellation_error(cause: BaseException | None, err: Exception) -> CancellationError:
    """The workflow's typed refusal as the client's error. A failure of ours (a store
    constraint, a type nobody maps) is logged with its trace and answered as such, never
    passed off as the caller's ``invalid_transition``."""
    failure_type = cause.type if isinstance(cause, ApplicationError) else None
    code = as_error_code(failure_type)
    if code is ErrorCode.INTERNAL_ERROR:
        log.error("a run failed on our side (%s)", failure_type, exc_info=err)
        return CancellationError(
            code, "the cancellation failed on our side; it is logged and nothing was changed"
        )
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    return CancellationError(code, message)


def rpc_error(err: RPCError) -> CancellationError:
    if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return CancellationError(
            ErrorCode.TEMPORAL_UNAVAILABLE, f"Temporal does not answer: {err.message}"
        )
    if err.status is RPCStatusCode.NOT_FOUND:
        return CancellationError(ErrorCode.CANCELLATION_NOT_FOUND, err.message)
    return CancellationError(ErrorCode.TEMPORAL_UNAVAILABLE, f"Temporal refused: {err.message}")
