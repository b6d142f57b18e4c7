"""Activities that read and write the store database.

Rule numbers are those of ``docs/rules.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.database import OpenedCancellation, StoreRepository
from domain.cancellation import CancellationView, StartCancellationInput
from domain.changes import ChangeResult, ChangeSet
from domain.errors import CancellationError, FailureType
from domain.money import Money
from domain.order import Order
from domain.scope import refundable_before_acceptance
from domain.shop import ShopSettings


class OpenCancellationInput(BaseModel):
    """Record a new cancellation and hold its order."""

    start: StartCancellationInput
    view: CancellationView
    at: datetime


class OpenCancellationResult(BaseModel):
    """The order, the shop's settings and what earlier cancellations refunded."""

    order: Order
    settings: ShopSettings
    refunded_by_tender: dict[str, int]
    created_at: datetime


class ApplyChangesInput(BaseModel):
    """One transition's change set for one order."""

    shop_id: str
    order_id: str
    changes: ChangeSet


class StoreActivities:
    """The store database side of a cancellation."""

    def __init__(self, repository: StoreRepository) -> None:
        self._store = repository

    @property
    def repository(self) -> StoreRepository:
        """The store these activities write to (the worker builds the bulk activities on it)."""
        return self._store

    @activity.defn
    async def open_cancellation(self, input: OpenCancellationInput) -> OpenCancellationResult:
        """Check the order may be canceled now and record the cancellation (rules 1–3)."""
        async with _business_errors():
            opened = await self._store.open_cancellation(
                input.start,
                input.start.seq,
                input.view,
                input.at,
                run_id=activity.info().workflow_run_id or None,
            )
        await self._store_money_from_the_start(input.start, opened)
        return OpenCancellationResult(
            order=opened.order,
            settings=opened.settings,
            refunded_by_tender=opened.refunded_by_tender,
            created_at=opened.created_at,
        )

    async def _store_money_from_the_start(
        self, start: StartCancellationInput, opened: OpenedCancellation
    ) -> None:
        """Give the stored opening view its ``refundable`` and ``refunded`` (0), as the run's
        own view has them: the view is recorded before the order is read, so lists of
        requests would show no money until the merchant's decision. Idempotent."""
        row = await self._store.get_cancellation(start.shop_id, start.cancellation_id)
        if row is None or row.view.refundable is not None:
            return
        refundable = refundable_before_acceptance(
            opened.order, start.items, opened.refunded_by_tender
        )
        if refundable is not None:
            zero = Money(amount=0, currency=refundable.currency)
            await self._store.save_view(
                row.view.model_copy(update={"refundable": refundable, "refunded": zero})
            )

    @activity.defn
    async def apply_changes(self, input: ApplyChangesInput) -> ChangeResult:
        """Apply one transition (status, stock, balances, refund lines, audit, outbox)."""
        async with _business_errors():
            applied, order_status = await self._store.apply_changes(
                input.changes, input.shop_id, input.order_id
            )
        if not applied:
            activity.logger.info("change set %s was applied before", input.changes.event_key)
        return ChangeResult(
            applied_at=input.changes.event.at,
            already_applied=not applied,
            order_status=order_status,
        )


@asynccontextmanager
async def _business_errors() -> AsyncIterator[None]:
    """Refusals fail the activity for good; database trouble is retried by Temporal."""
    try:
        yield
    except CancellationError as err:
        raise ApplicationError(err.message, type=err.code.value, non_retryable=True) from None
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as err:
        # A constraint we rely on (say, a balance going negative) is a bug or bad data;
        # retrying can't fix it, a person must look.
        raise ApplicationError(
            f"store refused the change: {type(err).__name__}",
            type=FailureType.STORE_CONSTRAINT,
            non_retryable=True,
        ) from None
