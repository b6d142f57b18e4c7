"""The cancellation workflow's queue of merchant and customer actions.

Signal and update handlers only put an action in the queue; ``run()`` takes them out one
at a time, so every change of state happens in one place and in order. An update's
handler waits until its command was carried out (or refused) and answers with the view.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.exceptions import ApplicationError

from domain.cancellation import (
    AcceptInput,
    Action,
    ConfirmRefundInput,
    ConfirmRepaymentInput,
    RejectInput,
    RetryRefundInput,
    UndoInput,
    WithdrawInput,
)
from domain.errors import ErrorCode

ActionInput = (
    AcceptInput
    | RejectInput
    | WithdrawInput
    | ConfirmRefundInput
    | RetryRefundInput
    | UndoInput
    | ConfirmRepaymentInput
)
"""The body of any action."""


@dataclass
class Command:
    """An action waiting for ``run()``; its handler waits for ``done``."""

    action: Action
    payload: ActionInput
    done: bool = False
    error: ApplicationError | None = None


class CommandQueue:
    """Actions in the order they arrived."""

    def __init__(self) -> None:
        self._waiting: list[Command] = []

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def push(self, action: Action, payload: ActionInput) -> Command:
        """Queue an action; the caller may wait for the returned command's ``done``."""
        command = Command(action, payload)
        self._waiting.append(command)
        return command

    def pop(self) -> Command:
        """The oldest waiting action."""
        return self._waiting.pop(0)

    def refuse_all(self, message: str) -> None:
        """Answer the commands no one will carry out any more (the run ends)."""
        for command in self._waiting:
            command.error = refusal(ErrorCode.INVALID_TRANSITION, message)
            command.done = True
        self._waiting.clear()


def body(payload: ActionInput) -> str:
    """An action's body as compared for repeats (same action, same body)."""
    return str(payload.model_dump_json())


def refusal(code: ErrorCode, message: str) -> ApplicationError:
    """A refusal with its error code: fails the update, never the workflow task."""
    return ApplicationError(message, type=code.value, non_retryable=True)
