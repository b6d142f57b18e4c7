"""Bulk cancellation (spec 7.6): a SKU sells out, and every open order holding it is canceled.

One job per request. Each matched order gets one outcome:

- ``started``: a merchant-initiated cancellation of the SKU's items (the whole order when
  they are all it still holds) was started, named by its cancellation id;
- ``already_open``: the order has an open cancellation; nothing new was started;
- ``refused``: the cancellation was refused, with the error code (``order_shipped``, …).

The job's ``counts`` add up: ``matched = started + already_open + refused``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from domain.cancellation import CanceledItem, ReasonCode, Text
from domain.errors import CancellationError, ErrorCode
from domain.order import Identifier, Order
from domain.refund_plan import RefundMethod
from domain.requests import QuoteLine
from domain.scope import remaining_quantities

DEFAULT_CONCURRENCY: Final = 20
"""Orders one job starts at the same time: enough to keep a worker busy, few enough that
the single cancellations other merchants start meanwhile still get their share."""
MAX_CONCURRENCY: Final = 200
DEFAULT_PAGE_SIZE: Final = 100
"""Orders read from the store at a time (the keyset page); the next page is read while the
last one's starts still run."""
MAX_PAGE_SIZE: Final = 1000
DEFAULT_ORDERS_PER_RUN: Final = 500
"""Orders one run starts (in one activity) before the job continues as new: each run's
history stays about 12 events however many orders match, and the window of starts drains
only once per run."""

BULK_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
"""A bulk id is an identifier like a shop's or an order's: it never contains ``~``."""

BulkId = Annotated[str, Field(min_length=1, max_length=64, pattern=BULK_ID_PATTERN)]


class BulkOutcome(StrEnum):
    """What the job did with one matched order."""

    STARTED = "started"
    """A cancellation of the SKU's items was started (or, for a dry run, would be)."""
    ALREADY_OPEN = "already_open"
    """The order had an open cancellation: it was left to it (rule 3)."""
    REFUSED = "refused"
    """The cancellation was refused; ``error`` says why."""


class BulkStatus(StrEnum):
    """Where a job is."""

    RUNNING = "running"
    """Still reading and starting orders."""
    COMPLETED = "completed"
    """Every matched order has an outcome."""
    STOPPED = "stopped"
    """The merchant stopped it; the cancellations it started go on."""


class BulkRequest(BaseModel):
    """``POST /v1/shops/{shop_id}/bulk-cancellations``."""

    model_config = ConfigDict(extra="forbid")

    sku: Identifier
    reason_code: ReasonCode = ReasonCode.SOLD_OUT
    reason: Text = ""
    refund_method: RefundMethod = RefundMethod.ORIGINAL
    restock: StrictBool = False
    """Sold out: nothing to put back; ``true`` for, say, a recall of goods still sellable."""
    notify_customer: StrictBool = True
    dry_run: StrictBool = False


def check_bulk_request(request: BulkRequest) -> None:
    """A bank deposit needs each customer's bank account, which one job can't carry.

    Raises:
        CancellationError: ``validation_error`` for ``refund_method: bank_deposit``.
    """
    if request.refund_method is RefundMethod.BANK_DEPOSIT:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            "a bank deposit needs each customer's bank_account, which a bulk cancellation"
            " can't carry: use refund_method original or credits",
        )


class BulkCounts(BaseModel):
    """How many matched orders got each outcome so far."""

    matched: int = 0
    started: int = 0
    already_open: int = 0
    refused: int = 0

    @classmethod
    def of(cls, by_outcome: dict[BulkOutcome, int]) -> BulkCounts:
        """Counts from the number of orders per outcome."""
        started = by_outcome.get(BulkOutcome.STARTED, 0)
        already_open = by_outcome.get(BulkOutcome.ALREADY_OPEN, 0)
        refused = by_outcome.get(BulkOutcome.REFUSED, 0)
        return cls(
            matched=started + already_open + refused,
            started=started,
            already_open=already_open,
            refused=refused,
        )


class BulkJob(BaseModel):
    """A bulk cancellation as the hook, the client and the ``progress`` query show it."""

    bulk_id: str
    shop_id: str
    workflow_id: str
    sku: str
    status: BulkStatus
    counts: BulkCounts
    reason_code: ReasonCode
    refund_method: RefundMethod
    restock: bool
    notify_customer: bool
    stop_requested: bool = False
    created_at: datetime | None = None
    finished_at: datetime | None = None


class BulkError(BaseModel):
    """Why an order's cancellation was refused."""

    code: ErrorCode
    message: str


class BulkItem(BaseModel):
    """One matched order's outcome."""

    order_id: str
    outcome: BulkOutcome
    cancellation_id: str | None = None
    """The cancellation started (``started``) or found open (``already_open``)."""
    items: list[CanceledItem] | None = None
    """The quantities canceled; ``null`` for the whole order."""
    error: BulkError | None = None
    at: datetime


class BulkItemPage(BaseModel):
    """A page of a job's outcomes, by order id; ``next_cursor`` fetches the next one."""

    items: list[BulkItem]
    next_cursor: str | None = None


class DryRunOrder(BaseModel):
    """What a real run would do with one order, with the refund plan it would make."""

    order_id: str
    outcome: BulkOutcome
    items: list[CanceledItem] | None = None
    error: BulkError | None = None
    cancellation_id: str | None = None
    """The open cancellation, for ``already_open``."""
    currency: str | None = None
    refundable: int | None = None
    lines: list[QuoteLine] = []
    """The refund lines per tender, as a quote shows them."""


class BulkDryRun(BaseModel):
    """A dry run: what would happen, with nothing started or changed."""

    dry_run: bool = True
    sku: str
    counts: BulkCounts
    orders: list[DryRunOrder]
    truncated: bool = False
    """More orders match than a dry run lists (the real run takes them all)."""


def bulk_workflow_id(shop_id: str, bulk_id: str) -> str:
    """``bulk~{shop_id}~{bulk_id}``: injective, since none of the ids can contain ``~``."""
    return f"bulk~{shop_id}~{bulk_id}"


def items_to_cancel(order: Order, sku: str) -> list[CanceledItem] | None:
    """The order's uncanceled quantities of ``sku``; ``None`` when they are all it holds.

    Raises:
        CancellationError: ``invalid_transition`` when nothing of the SKU is left to cancel
            (another cancellation took it meanwhile).
    """
    remaining = remaining_quantities(order)
    of_sku = [
        CanceledItem(item_id=item.item_id, quantity=remaining[item.item_id])
        for item in order.items
        if item.sku == sku and remaining[item.item_id] > 0
    ]
    if not of_sku:
        raise CancellationError(
            ErrorCode.INVALID_TRANSITION,
            f"order {order.order_id} has no uncanceled {sku} left",
        )
    if sum(remaining.values()) == sum(item.quantity for item in of_sku):
        return None
    return of_sku


# -- the workflow's and activities' inputs -------------------------------------------------------


class BulkParameters(BaseModel):
    """What every order of the job is canceled with, and how fast."""

    shop_id: Identifier
    bulk_id: BulkId
    sku: Identifier
    reason_code: ReasonCode
    reason: Text = ""
    refund_method: RefundMethod
    restock: bool
    notify_customer: bool
    actor: str
    concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] = DEFAULT_CONCURRENCY
    page_size: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE
    orders_per_run: Annotated[int, Field(ge=1)] = DEFAULT_ORDERS_PER_RUN


class BulkCancellationInput(BaseModel):
    """The ``BulkCancellation`` workflow's input; continue-as-new carries the state along."""

    parameters: BulkParameters
    created_at: datetime | None = None
    """Set by the first run when it registered the job."""
    cursor: str | None = None
    """The last order id of the pages done (keyset: the next page starts after it)."""
    counts: BulkCounts = BulkCounts()
    stop_requested: bool = False
    runs: int = 1


class RegisterBulkInput(BaseModel):
    """Record the job in the store (its first step)."""

    parameters: BulkParameters
    workflow_id: str
    at: datetime


class StartOrdersInput(BaseModel):
    """Start the cancellations of up to ``limit`` more matching orders (one run's share)."""

    parameters: BulkParameters
    after: str | None = None
    limit: Annotated[int, Field(ge=1)] = DEFAULT_ORDERS_PER_RUN


class StartOrdersResult(BaseModel):
    """What the orders' starts did, and the job's counts afterwards (read from the store)."""

    last_order_id: str | None
    """Where the next run starts reading (keyset cursor)."""
    more: bool
    """Orders may be left: the limit was reached with full pages."""
    stopped: bool
    """The merchant stopped the job: no further order was started."""
    counts: BulkCounts


class FinishBulkInput(BaseModel):
    """Record how the job ended."""

    shop_id: str
    bulk_id: str
    status: BulkStatus
    at: datetime
