"""Cancellations: statuses, the merchant's and customer's actions, and the view.

The view (``CancellationView``) is public: the ``status`` query, the client, the CLI
and the HTTP hook all return it.

Rule numbers are those of ``docs/rules.md``.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from domain.bank import BankAccountRef
from domain.money import Money
from domain.order import Identifier, OrderStatus, TenderKind
from domain.refund_plan import RefundChannel, RefundMethod

Text = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")]
"""Free text from people (reasons, notes); bounded so payloads stay small, and without NUL
characters, which PostgreSQL text can't hold."""
Reference = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
"""A transfer or payment reference the merchant types."""
RefundId = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[^\x00]+$")]
"""``{cancellation_id}-r{n}``: long shop and order ids make long refund ids."""
Actor = Annotated[str, Field(min_length=1, max_length=200)]
"""Who acted: ``merchant:<user>``, ``customer:<id>`` or ``system``."""


class CancellationStatus(StrEnum):
    """The cancellation's state, as merchants and operators see it."""

    REQUESTED = "requested"
    """A customer asked; the merchant has not decided."""
    IN_PROGRESS = "in_progress"
    """Accepted; refunds are running."""
    CANCELED = "canceled"
    """Fully refunded; the order is canceled. Undo stays possible for a while."""
    REJECTED = "rejected"
    """The merchant refused the request."""
    WITHDRAWN = "withdrawn"
    """The customer took the request back."""
    UNDOING = "undoing"
    """The merchant is undoing the cancellation."""
    AWAITING_REPAYMENT = "awaiting_repayment"
    """Undone, waiting for the customer to pay again."""
    UNDONE = "undone"
    """The order is back as it was."""


OPEN_STATUSES = frozenset(
    {
        CancellationStatus.REQUESTED,
        CancellationStatus.IN_PROGRESS,
        CancellationStatus.UNDOING,
        CancellationStatus.AWAITING_REPAYMENT,
    }
)
"""While a cancellation is in one of these, the order can't get another (rule 3)."""


class RefundStatus(StrEnum):
    """The state of one refund line."""

    PENDING = "pending"
    PROCESSING = "processing"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class InitiatedBy(StrEnum):
    """Who started the cancellation."""

    CUSTOMER = "customer"
    MERCHANT = "merchant"


class Channel(StrEnum):
    """Where the cancellation came from."""

    MY_ACCOUNT = "my_account"
    """The customer's My Account page."""
    CONTACT = "contact"
    """The customer phoned or wrote; the merchant enters it."""
    ADMIN = "admin"
    """The merchant's own decision in the store admin."""


class ReasonCode(StrEnum):
    """Why an order is canceled (rule 5)."""

    CHANGED_MIND = "changed_mind"
    SHIPPING_DELAY = "shipping_delay"
    SOLD_OUT = "sold_out"
    DEFECTIVE = "defective"
    UNDELIVERABLE_AREA = "undeliverable_area"
    CUSTOMER_CONTACT = "customer_contact"
    OTHER = "other"


class Action(StrEnum):
    """Actions on a cancellation, named as in the HTTP routes."""

    ACCEPT = "accept"
    REJECT = "reject"
    WITHDRAW = "withdraw"
    CONFIRM_REFUND = "confirm_refund"
    RETRY_REFUND = "retry_refund"
    UNDO = "undo"
    REPAYMENT = "repayment"


class Attention(StrEnum):
    """Why a run needs a person (search attribute ``NeedsAttention``)."""

    NONE = "none"
    DECISION_OVERDUE = "decision_overdue"
    """Nobody accepted or rejected within the shop's reminder time."""
    REFUND_FAILED = "refund_failed"
    """A refund failed for good; retry it or switch its method."""
    AWAITING_BANK_DEPOSIT = "awaiting_bank_deposit"
    """A refund waits for the merchant's manual bank transfer and its confirmation."""
    UNDO_FAILED = "undo_failed"
    """An undo failed halfway and was rolled back; see the history for why."""
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """A refund has waited over an hour for the payment provider to answer; it keeps
    trying with the same idempotency key, and clears this once the provider answers."""
    REFUND_REVERSED = "refund_reversed"
    """The provider reversed a refund it had reported as succeeded: the money is back with
    the store and the customer is owed it again. Retry the line or switch its method."""


class CanceledItem(BaseModel):
    """A quantity of one order item to cancel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: Identifier
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]


# ----------------------------------------------------------------------------- actions


class AcceptInput(BaseModel):
    """The merchant accepts: reason and refund method (rule 6)."""

    model_config = ConfigDict(extra="forbid")

    reason_code: ReasonCode
    reason: Text = ""
    customer_note: Text | None = None
    refund_method: RefundMethod = RefundMethod.ORIGINAL
    bank_account: BankAccountRef | None = None
    restock: StrictBool = True
    notify_customer: StrictBool = True
    actor: Actor = "merchant"


class RejectInput(BaseModel):
    """The merchant refuses the customer's request."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")]
    customer_note: Text | None = None
    actor: Actor = "merchant"


class WithdrawInput(BaseModel):
    """The customer takes the request back."""

    model_config = ConfigDict(extra="forbid")

    actor: Actor = "customer"


class ConfirmRefundInput(BaseModel):
    """The merchant made a manual bank deposit."""

    model_config = ConfigDict(extra="forbid")

    refund_id: RefundId
    reference: Reference
    actor: Actor = "merchant"


class RetryRefundInput(BaseModel):
    """Retry a failed refund, or switch it to bank deposit or credits."""

    model_config = ConfigDict(extra="forbid")

    refund_id: RefundId
    method: RefundMethod | None = None
    bank_account: BankAccountRef | None = None
    actor: Actor = "merchant"


class UndoInput(BaseModel):
    """The merchant undoes the cancellation (rule 11)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")]
    customer_note: Text | None = None
    require_repayment: StrictBool = False
    """Where the provider can't recapture a payment, ask the customer to pay again."""
    actor: Actor = "merchant"


class ConfirmRepaymentInput(BaseModel):
    """The customer paid again after an undo."""

    model_config = ConfigDict(extra="forbid")

    reference: Reference
    amount: Annotated[StrictInt, Field(ge=1, le=10**15)]
    actor: Actor = "merchant"


class StartCancellationInput(BaseModel):
    """Starts one cancellation run (the workflow's input)."""

    model_config = ConfigDict(extra="forbid")

    cancellation_id: str
    seq: Annotated[int, Field(ge=1)]
    """The order's ``seq``-th cancellation (the ``n`` of the workflow id)."""
    shop_id: Identifier
    order_id: Identifier
    initiated_by: InitiatedBy
    channel: Channel
    reason_code: ReasonCode | None = None
    reason: Text = ""
    items: list[CanceledItem] | None = None
    accept: AcceptInput | None = None
    actor: Actor
    provider_task_queue: str | None = None
    """Where provider activities run; ``None`` is the workflow's own task queue."""
    start_key: str | None = None
    """The Idempotency-Key of the request that started it, kept with the cancellation so a
    repeat of that request finds it, whatever was lost in between."""


# ----------------------------------------------------------------------------- the view


class RefundLine(BaseModel):
    """One refund back to one tender."""

    model_config = ConfigDict(extra="forbid")

    refund_id: str
    tender_id: str
    tender_kind: TenderKind
    method: RefundMethod
    channel: RefundChannel
    amount: int
    status: RefundStatus = RefundStatus.PENDING
    payment_id: str | None = None
    provider_reference: str | None = None
    failure: str | None = None
    bank_account: BankAccountRef | None = None
    confirmation_reference: str | None = None
    attempts: int = 0
    """How many times the provider was asked; each try has its own idempotency key."""


class HistoryEntry(BaseModel):
    """One audited transition: who, when, what and why (rule 12)."""

    model_config = ConfigDict(extra="forbid")

    at: datetime
    event: str
    actor: str
    detail: dict[str, Any] = {}


class CancellationView(BaseModel):
    """The cancellation as merchants, operators and services see it."""

    model_config = ConfigDict(extra="forbid")

    cancellation_id: str
    shop_id: str
    order_id: str
    workflow_id: str
    status: CancellationStatus
    order_status: OrderStatus | None
    initiated_by: InitiatedBy
    channel: Channel
    reason_code: ReasonCode | None
    reason: str
    customer_note: str | None = None
    refund_method: RefundMethod | None = None
    refundable: Money | None = None
    """What the cancellation refunds: from the start what accepting would refund (the
    quote's amount), then the acceptance's refund plan. ``None`` only in views stored by an
    earlier release before acceptance, and inside a run for the moment before it opens."""
    refunded: Money | None = None
    """What its refund lines have refunded so far (see :meth:`_refunded_from_the_start`)."""
    refunds: list[RefundLine] = []
    items: list[CanceledItem] | None = None
    repayment_due: Money | None = None
    needs_attention: Attention | None = None
    allowed_actions: list[Action] = []
    history: list[HistoryEntry] = []
    created_at: datetime | None = None
    canceled_at: datetime | None = None
    undo_until: datetime | None = None
    repayment_until: datetime | None = None
    """While ``awaiting_repayment``: when the undo is reversed if the customer hasn't paid."""
    closed: bool = False
    """The run has finished; nothing more can happen to this cancellation."""

    @model_validator(mode="after")
    def _refunded_from_the_start(self) -> Self:
        """``refunded`` is money from the start: 0 until a refund succeeds, never null.

        Filled in the currency the view names (``refundable``'s, or ``repayment_due``'s),
        so views stored before acceptance, or by an earlier release, read the same.
        """
        if self.refunded is None:
            money = self.refundable or self.repayment_due
            if money is not None:
                self.refunded = Money(amount=0, currency=money.currency)
        return self
