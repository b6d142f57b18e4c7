"""How the cancellation workflow handles merchants' and customers' actions: an update or a
signal only queues its action (``workflows.commands``); ``run()`` takes them out one at a
time here, checks each against the current state (the validators use the same check),
answers a repeat like the first, and carries the action out through the process's own
``_perform``.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.cancellation import (
        Action,
        CancellationStatus,
        CancellationView,
        ConfirmRefundInput,
        RefundStatus,
        RetryRefundInput,
    )
    from domain.errors import CancellationError, ErrorCode
    from domain.rules import allowed_actions
    from domain.transitions import (
        check_line_action,
    )
    from workflows.commands import body, refusal
    from workflows.core import CancellationCore, application_error
    from workflows.policies import (
        RETRY_AFTER_FAILING_AGAIN,
        SKIP_QUEUED_REPEATS,
    )


class CommandSteps(CancellationCore):
    """The command handling of ``OrderCancellationWorkflow``."""

    async def _run_next_command(self) -> None:
        command = self._commands.pop()
        if command.action is Action.UNDO and self._in_flight():
            # A refund in flight is waited for (rule 11): its outcome decides what to take back.
            workflow.set_current_details(
                "Undo requested: waiting for the refunds in flight to finish first ("
                + "; ".join(
                    line.refund_id
                    for line in self._view.refunds
                    if line.status is RefundStatus.PROCESSING
                )
                + ")."
            )
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
                self._run.applied.append((command.action, body(command.payload)))
        except ApplicationError as refusal:
            command.error = refusal
            workflow.logger.warning(
                "%s refused: %s (%s)", command.action.value, refusal.message, refusal.type
            )
        finally:
            command.done = True

    async def _submit(self, action: Action, payload: Any) -> CancellationView:
        """An update's body: queue the action and answer once it took effect."""
        if self._is_repeat(action, payload):
            return self._snapshot()
        command = self._commands.push(action, payload)
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
        self._commands.push(action, payload)

    def _is_repeat(self, action: Action, payload: Any, *, validating: bool = False) -> bool:
        """An action that took effect with the same body: answered with the view, again.

        A retry of a refund line that has failed again since is a new attempt, though its
        body is the same ("retry as is" twice). A validator can't consult the patch: it lets
        such a retry through, and the handler decides.
        """
        if (action, body(payload)) not in self._run.applied:
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
            raise refusal(
                ErrorCode.INVALID_TRANSITION, "the cancellation is still opening; try again"
            )
        if validating and action is Action.UNDO and self._undo_window_closed():
            # Only when validating: validators don't run on replay, so a history with an
            # undo signal that raced the window's end replays as it ran.
            until = self._view.undo_until
            raise refusal(
                ErrorCode.UNDO_WINDOW_CLOSED,
                f"the undo window of {self._view.cancellation_id} closed at"
                f" {until:%Y-%m-%d %H:%M:%S} UTC; ask the customer to order again",
            )
        if action not in allowed_actions(self._view):
            raise refusal(
                ErrorCode.INVALID_TRANSITION,
                f"can't {action.value} a cancellation that is {self._view.status.value}"
                + (
                    f" (allowed: {', '.join(a.value for a in self._view.allowed_actions)})"
                    if self._view.allowed_actions
                    else ""
                ),
            )
        if isinstance(payload, ConfirmRefundInput | RetryRefundInput):
            retry = payload if isinstance(payload, RetryRefundInput) else None
            try:
                check_line_action(
                    self._view,
                    action,
                    payload.refund_id,
                    method=retry.method if retry else None,
                    bank_account=retry.bank_account if retry else None,
                )
            except CancellationError as err:
                raise application_error(err) from None

    def _undo_window_closed(self) -> bool:
        """Canceled, and the shop's undo window is over (at once, for a window of zero)."""
        until = self._view.undo_until
        return (
            self._view.status is CancellationStatus.CANCELED
            and until is not None
            and until <= workflow.now()
        )
