"""Requests as backend services and merchants send them (HTTP, CLI, Python client).

They differ from the workflow's inputs in one way: they carry a full bank account,
which the client stores in the database and replaces by a reference before anything
reaches Temporal.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from domain.bank import BankAccount
from domain.cancellation import CanceledItem, Channel, InitiatedBy, ReasonCode, Reference, Text
from domain.order import TenderKind
from domain.refund_plan import RefundMethod


class AcceptRequest(BaseModel):
    """``POST …/cancellation/accept``."""

    model_config = ConfigDict(extra="forbid")

    reason_code: ReasonCode
    reason: Text = ""
    customer_note: Text | None = None
    refund_method: RefundMethod = RefundMethod.ORIGINAL
    bank_account: BankAccount | None = None
    restock: StrictBool = True
    notify_customer: StrictBool = True


class StartRequest(BaseModel):
    """``POST …/orders/{order_id}/cancellation``."""

    model_config = ConfigDict(extra="forbid")

    initiated_by: InitiatedBy
    channel: Channel
    reason_code: ReasonCode | None = None
    reason: Text = ""
    items: Annotated[list[CanceledItem], Field(min_length=1, max_length=500)] | None = None
    accept: AcceptRequest | None = None


class RejectRequest(BaseModel):
    """``POST …/cancellation/reject``."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")]
    customer_note: Text | None = None


class ConfirmRefundRequest(BaseModel):
    """``POST …/cancellation/refunds/{refund_id}/confirm``."""

    model_config = ConfigDict(extra="forbid")

    reference: Reference


class RetryRefundRequest(BaseModel):
    """``POST …/cancellation/refunds/{refund_id}/retry``."""

    model_config = ConfigDict(extra="forbid")

    method: RefundMethod | None = None
    bank_account: BankAccount | None = None


class UndoRequest(BaseModel):
    """``POST …/cancellation/undo``."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")]
    customer_note: Text | None = None
    require_repayment: StrictBool = False


class RepaymentRequest(BaseModel):
    """``POST …/cancellation/repayment``: the customer paid again."""

    model_config = ConfigDict(extra="forbid")

    reference: Reference
    amount: Annotated[StrictInt, Field(ge=1, le=10**15)]


class QuoteRequest(BaseModel):
    """``POST …/cancellation/quote``."""

    model_config = ConfigDict(extra="forbid")

    refund_method: RefundMethod = RefundMethod.ORIGINAL
    items: Annotated[list[CanceledItem], Field(min_length=1, max_length=500)] | None = None


class QuoteLine(BaseModel):
    """One line of a quote."""

    tender_id: str
    tender_kind: TenderKind
    method: RefundMethod
    amount: int


class Quote(BaseModel):
    """What an acceptance would refund, with nothing changed."""

    refundable: int
    currency: str
    lines: list[QuoteLine]
