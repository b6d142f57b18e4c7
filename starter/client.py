"""The Python client backend services use: one method per action, typed errors.

Every action returns the :class:`~domain.cancellation.CancellationView` after the
action took effect, or raises :class:`~domain.errors.CancellationError` with one of
the error codes of ``domain.errors``. The CLI and the HTTP hook are thin layers over this class.
The client's side of each cancellation's Temporal run is :mod:`starter.runs`.

Rule numbers are those of ``docs/rules.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from activities.database import CancellationRow, StoreRepository, create_pool
from activities.provider_client import (
    PaymentProviderClient,
)
from domain.bank import BankAccount, BankAccountRef
from domain.cancellation import (
    OPEN_STATUSES,
    AcceptInput,
    Action,
    CancellationStatus,
    CancellationView,
    ConfirmRefundInput,
    ConfirmRepaymentInput,
    RejectInput,
    RetryRefundInput,
    StartCancellationInput,
    UndoInput,
    WithdrawInput,
)
from domain.contract import TASK_QUEUE, cancellation_workflow_id
from domain.errors import CancellationError, ErrorCode
from domain.order import Order
from domain.refund_plan import RefundMethod
from domain.requests import (
    AcceptRequest,
    ConfirmRefundRequest,
    RejectRequest,
    RepaymentRequest,
    RetryRefundRequest,
    StartRequest,
    UndoRequest,
)
from domain.rules import check_can_start, check_start_input
from domain.scope import scope_of
from starter.codec import data_converter
from starter.config import Settings
from starter.order_desk import OrderDesk
from starter.providers import provider_client
from starter.runs import (
    Step,
    closed_if_done,
    current_view,
    initial_view,
    is_unknown_update,
    rpc_error,
    send_update,
    static_details,
    static_summary,
    update_refusal,
    wait_opened,
)
from workflows.order_cancellation import OrderCancellationWorkflow
from workflows.search_attributes import start_search_attributes

# How long a start waits for the run to open (check the order, hold it) before
# answering; opening is one short database transaction.
OPEN_WAIT_SECONDS = 30.0


async def connect_temporal(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """The one place a Temporal client is built: settings plus the pydantic converter
    (encrypting where a key is configured); ``runtime`` carries the worker's metrics."""
    try:
        return await Client.connect(
            **settings.temporal_connect,
            data_converter=data_converter(settings.payload_encryption_key),
            runtime=runtime,
        )
    except RuntimeError as err:
        raise CancellationError(
            ErrorCode.TEMPORAL_UNAVAILABLE,
            f"can't reach Temporal at {settings.temporal_address}: {err}",
        ) from None


# The run's updates, each with the action a view allows it as.
_ACCEPT: Step[AcceptInput] = Step(Action.ACCEPT, OrderCancellationWorkflow.accept_update)
_REJECT: Step[RejectInput] = Step(Action.REJECT, OrderCancellationWorkflow.reject_update)
_WITHDRAW: Step[WithdrawInput] = Step(Action.WITHDRAW, OrderCancellationWorkflow.withdraw_update)
_CONFIRM_REFUND: Step[ConfirmRefundInput] = Step(
    Action.CONFIRM_REFUND, OrderCancellationWorkflow.confirm_refund_update
)
_RETRY_REFUND: Step[RetryRefundInput] = Step(
    Action.RETRY_REFUND, OrderCancellationWorkflow.retry_refund_update
)
_UNDO: Step[UndoInput] = Step(Action.UNDO, OrderCancellationWorkflow.undo_update)
_REPAYMENT: Step[ConfirmRepaymentInput] = Step(
    Action.REPAYMENT, OrderCancellationWorkflow.confirm_repayment_update
)


@dataclass(frozen=True)
class Page:
    """One page of a list, newest first."""

    items: list[CancellationView]
    next_cursor: str | None


class CancellationClient(OrderDesk):
    """Start and drive order cancellations."""

    def __init__(
        self,
        temporal: Client,
        store: StoreRepository,
        *,
        task_queue: str = TASK_QUEUE,
        provider_task_queue: str | None = None,
        pool: asyncpg.Pool | None = None,
        open_wait: float = OPEN_WAIT_SECONDS,
        provider: PaymentProviderClient | None = None,
        provider_accounts: Mapping[str, str] | None = None,
    ) -> None:
        self.temporal = temporal
        self._open_wait = open_wait
        self.store = store
        self._task_queue = task_queue
        self._provider_task_queue = provider_task_queue
        self._pool = pool
        self._provider = provider
        self.provider_accounts: dict[str, str] = dict(provider_accounts or {})
        """shop id → its account at the payment provider (``PROVIDER_ACCOUNTS``)."""

    @classmethod
    async def connect(cls, settings: Settings) -> CancellationClient:
        """Connect to Temporal and the store database as the settings say."""
        temporal = await connect_temporal(settings)
        try:
            pool = await create_pool(settings.require_database())
        except (OSError, asyncpg.PostgresError) as err:
            raise CancellationError(
                ErrorCode.DATABASE_UNAVAILABLE, f"can't reach the store database: {err}"
            ) from None
        return cls.over(temporal, pool, settings)

    @classmethod
    def over(cls, temporal: Client, pool: asyncpg.Pool, settings: Settings) -> CancellationClient:
        """A client over an open Temporal connection and store pool, as ``settings`` say
        (task queues, the provider, the shops' provider accounts); it closes ``pool``."""
        return cls(
            temporal,
            StoreRepository(pool),
            task_queue=settings.task_queue,
            provider_task_queue=settings.provider_task_queue,
            pool=pool,
            provider=provider_client(settings),
            provider_accounts=settings.provider_accounts,
        )

    async def close(self) -> None:
        """Release the database pool and the provider connections this client holds."""
        if self._pool is not None:
            await self._pool.close()
        if self._provider is not None:
            await self._provider.aclose()

    # ------------------------------------------------------------------ starting

    async def start_cancellation(
        self,
        shop_id: str,
        order_id: str,
        request: StartRequest,
        *,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[CancellationView, bool]:
        """Start a cancellation; ``(view, True)`` when new, ``(view, False)`` when one is open.

        Rule 3: while a cancellation of the order is open, starting again returns it.
        ``idempotency_key`` is kept with the cancellation: a start repeated with it answers
        the cancellation it started, even one that has finished since (a partial
        cancellation, say, whose repeat would otherwise cancel the next items).
        """
        check_start_input(request.initiated_by, request.channel, request.accept is not None)
        if idempotency_key is not None:
            started = await self.store.cancellation_by_start_key(shop_id, idempotency_key)
            if started is not None:
                if started.view.order_id != order_id:
                    raise CancellationError(
                        ErrorCode.IDEMPOTENCY_KEY_REUSED,
                        "this Idempotency-Key started a cancellation of another order",
                    )
                return await current_view(self.temporal, started), False
        context = await self.store.order_context(shop_id, order_id)
        order, latest = context.order, context.latest
        if latest is not None and latest.status in OPEN_STATUSES:
            return await current_view(self.temporal, latest), False
        check_can_start(order, context.settings, request.initiated_by, request.channel)
        scope_of(order, request.items)  # quantities beyond what remains: validation_error
        accept = None
        if request.accept is not None:
            plan = await self._plan(order, request.accept.refund_method, request.items)
            if plan.needs_bank_account and request.accept.bank_account is None:
                raise CancellationError(
                    ErrorCode.VALIDATION_ERROR,
                    "this refund goes out by bank deposit: bank_account is required",
                )
            accept = await self._accept_input(shop_id, request.accept, actor or "merchant")
        seq = (latest.seq + 1) if latest else 1
        cancellation_id = cancellation_workflow_id(shop_id, order_id, seq)
        start = StartCancellationInput(
            cancellation_id=cancellation_id,
            seq=seq,
            shop_id=shop_id,
            order_id=order_id,
            initiated_by=request.initiated_by,
            channel=request.channel,
            reason_code=request.reason_code or (accept.reason_code if accept else None),
            reason=request.reason or (accept.reason if accept else ""),
            items=request.items,
            accept=accept,
            actor=actor or _default_actor(request, order),
            provider_task_queue=self._provider_task_queue,
            start_key=idempotency_key,
        )
        options: dict[str, Any] = {
            "id": cancellation_id,
            "task_queue": self._task_queue,
            # FAIL tells us a run is open already (answer 200 with it); like
            # USE_EXISTING it never starts a second run for the same id.
            "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
            "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            "search_attributes": start_search_attributes(initial_view(start, order)),
            "static_summary": static_summary(start, order),
            "static_details": static_details(start),
        }
        handle = self.temporal.get_workflow_handle_for(
            OrderCancellationWorkflow.run, cancellation_id
        )
        accepted = accept is not None
        operation = WithStartWorkflowOperation(OrderCancellationWorkflow.run, start, **options)
        try:
            # One call starts the run and waits for its `opened` update: no polling.
            async with asyncio.timeout(self._open_wait):
                view: CancellationView = await self.temporal.execute_update_with_start_workflow(
                    "opened", result_type=CancellationView, start_workflow_operation=operation
                )
            return view, True
        except WorkflowAlreadyStartedError:
            # The operation holds the same error for its handle; take it, it is answered.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await operation.workflow_handle()
            return await wait_opened(handle, start, accepted=accepted, wait=self._open_wait), False
        except WorkflowUpdateFailedError as err:
            if not is_unknown_update(err):
                raise update_refusal(err) from None
            # A worker from before the `opened` update: the run started, watch it open.
            return await wait_opened(handle, start, accepted=accepted, wait=self._open_wait), True
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # No worker took the run up in time: it opens when one does.
            try:
                await handle.describe()
            except RPCError as err:
                if err.status is RPCStatusCode.NOT_FOUND:  # the start never reached Temporal
                    raise CancellationError(
                        ErrorCode.TEMPORAL_UNAVAILABLE, "Temporal did not start the cancellation"
                    ) from None
                raise rpc_error(err) from None
            return initial_view(start, order), True
        except RPCError as err:
            if err.status not in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED):
                raise rpc_error(err) from None
        # A server without update-with-start (older, or with it turned off): start, poll.
        try:
            await self.temporal.start_workflow(OrderCancellationWorkflow.run, start, **options)
        except WorkflowAlreadyStartedError:
            return await wait_opened(handle, start, accepted=accepted, wait=self._open_wait), False
        except RPCError as err:
            raise rpc_error(err) from None
        return await wait_opened(handle, start, accepted=accepted, wait=self._open_wait), True

    # ------------------------------------------------------------------ reading

    async def get_cancellation(
        self, shop_id: str, order_id: str | None = None, cancellation_id: str | None = None
    ) -> CancellationView:
        """The latest cancellation of an order, or the one named."""
        row = await self._row(shop_id, order_id, cancellation_id)
        return await current_view(self.temporal, row)

    async def cancellations_of_order(self, shop_id: str, order_id: str) -> list[CancellationView]:
        """All cancellations of an order, latest first."""
        await self.store.get_order(shop_id, order_id)
        rows = await self.store.cancellations_of_order(shop_id, order_id)
        return [closed_if_done(r.view) for r in rows]

    async def list_cancellations(
        self,
        shop_id: str,
        *,
        statuses: list[CancellationStatus] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """A shop's cancellations from the database projection, newest first."""
        before = _decode_cursor(cursor) if cursor else None
        rows = await self.store.list_cancellations(
            shop_id, statuses=statuses or [], limit=limit + 1, before=before
        )
        next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return Page([closed_if_done(r.view) for r in rows[:limit]], next_cursor)

    # ------------------------------------------------------------------ actions

    async def accept(
        self,
        shop_id: str,
        order_id: str | None,
        request: AcceptRequest,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "merchant",
    ) -> CancellationView:
        """The merchant accepts with a reason and a refund method."""
        row = await self._row(shop_id, order_id, cancellation_id)
        accept = await self._accept_input(shop_id, request, actor)
        return await send_update(self.temporal, row, _ACCEPT, accept, idempotency_key)

    async def reject(
        self,
        shop_id: str,
        order_id: str | None,
        request: RejectRequest,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "merchant",
    ) -> CancellationView:
        """The merchant rejects the customer's request."""
        row = await self._row(shop_id, order_id, cancellation_id)
        body = RejectInput(reason=request.reason, customer_note=request.customer_note, actor=actor)
        return await send_update(self.temporal, row, _REJECT, body, idempotency_key)

    async def withdraw(
        self,
        shop_id: str,
        order_id: str | None,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "customer",
    ) -> CancellationView:
        """The customer takes the request back."""
        row = await self._row(shop_id, order_id, cancellation_id)
        body = WithdrawInput(actor=actor)
        return await send_update(self.temporal, row, _WITHDRAW, body, idempotency_key)

    async def confirm_refund(
        self,
        shop_id: str,
        order_id: str | None,
        refund_id: str,
        request: ConfirmRefundRequest,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "merchant",
    ) -> CancellationView:
        """The merchant made the manual bank deposit."""
        row = await self._row(shop_id, order_id, cancellation_id)
        body = ConfirmRefundInput(refund_id=refund_id, reference=request.reference, actor=actor)
        return await send_update(self.temporal, row, _CONFIRM_REFUND, body, idempotency_key)

    async def retry_refund(
        self,
        shop_id: str,
        order_id: str | None,
        refund_id: str,
        request: RetryRefundRequest,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "merchant",
    ) -> CancellationView:
        """Retry a failed refund, or switch it to bank deposit or credits."""
        row = await self._row(shop_id, order_id, cancellation_id)
        if request.method is RefundMethod.BANK_DEPOSIT and request.bank_account is None:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR, "a bank deposit needs the customer's bank_account"
            )
        body = RetryRefundInput(
            refund_id=refund_id,
            method=request.method,
            bank_account=await self._bank_ref(shop_id, request.bank_account),
            actor=actor,
        )
        return await send_update(self.temporal, row, _RETRY_REFUND, body, idempotency_key)

    async def undo(
        self,
        shop_id: str,
        order_id: str | None,
        request: UndoRequest,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "merchant",
    ) -> CancellationView:
        """Undo the cancellation (rule 11); the store must end up no poorer."""
        row = await self._row(shop_id, order_id, cancellation_id)
        body = UndoInput(
            reason=request.reason,
            customer_note=request.customer_note,
            require_repayment=request.require_repayment,
            actor=actor,
        )
        return await send_update(self.temporal, row, _UNDO, body, idempotency_key)

    async def confirm_repayment(
        self,
        shop_id: str,
        order_id: str | None,
        request: RepaymentRequest,
        *,
        cancellation_id: str | None = None,
        idempotency_key: str | None = None,
        actor: str = "merchant",
    ) -> CancellationView:
        """The customer paid again after an undo."""
        row = await self._row(shop_id, order_id, cancellation_id)
        body = ConfirmRepaymentInput(
            reference=request.reference, amount=request.amount, actor=actor
        )
        return await send_update(self.temporal, row, _REPAYMENT, body, idempotency_key)

    # ------------------------------------------------------------------ helpers

    async def _row(
        self, shop_id: str, order_id: str | None, cancellation_id: str | None
    ) -> CancellationRow:
        if cancellation_id is not None:
            row = await self.store.get_cancellation(shop_id, cancellation_id)
            if row is None or (order_id is not None and row.view.order_id != order_id):
                raise CancellationError(
                    ErrorCode.CANCELLATION_NOT_FOUND,
                    f"shop {shop_id} has no cancellation {cancellation_id}",
                )
            return row
        assert order_id is not None, "name an order or a cancellation"
        row = await self.store.latest_cancellation(shop_id, order_id)
        if row is None:
            raise CancellationError(
                ErrorCode.CANCELLATION_NOT_FOUND, f"order {order_id} has no cancellation"
            )
        return row

    async def _accept_input(self, shop_id: str, request: AcceptRequest, actor: str) -> AcceptInput:
        return AcceptInput(
            reason_code=request.reason_code,
            reason=request.reason,
            customer_note=request.customer_note,
            refund_method=request.refund_method,
            bank_account=await self._bank_ref(shop_id, request.bank_account),
            restock=request.restock,
            notify_customer=request.notify_customer,
            actor=actor,
        )

    async def _bank_ref(self, shop_id: str, account: BankAccount | None) -> BankAccountRef | None:
        return None if account is None else await self.store.store_bank_account(shop_id, account)


# ---------------------------------------------------------------------- module helpers


def _default_actor(request: StartRequest, order: Order) -> str:
    if request.initiated_by == "customer":
        return f"customer:{order.customer_id}"
    return "merchant"


def _encode_cursor(row: CancellationRow) -> str:
    return f"{row.created_at.isoformat()}|{row.cancellation_id}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    at, _, cid = cursor.partition("|")
    try:
        moment = datetime.fromisoformat(at)
    except (ValueError, OverflowError):
        moment = None
    if moment is None or moment.tzinfo is None or "\x00" in cid or not 1970 < moment.year < 9999:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, "cursor is not valid")
    return moment, cid
