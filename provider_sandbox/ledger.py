"""The ledger of money movements and the rules that read it.

A payment's state is never stored on its own: it is folded from the ledger every time,
so the ledger is the single source of truth and can't disagree with the status.
"""

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from provider_sandbox.models import Behavior, RecaptureOutcome


class EntryType(StrEnum):
    """Kinds of movement in a payment's ledger."""

    AUTHORIZE = "authorize"
    """The customer's card holds the amount."""
    CAPTURE = "capture"
    """The held amount is taken."""
    VOID = "void"
    """The hold is released without taking anything."""
    REFUND = "refund"
    """Captured money goes back to the customer (written when the refund settles)."""
    RECAPTURE = "recapture"
    """Refunded or voided money is taken from the customer again."""
    REFUND_REVERSAL = "refund_reversal"
    """A refund that had succeeded failed afterwards: its money is back with the merchant."""


class PaymentStatus(StrEnum):
    """Where a payment stands, as derived from its ledger."""

    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


class RefundStatus(StrEnum):
    """Where a refund stands."""

    SUCCEEDED = "succeeded"
    PENDING = "pending"
    """Accepted; the money is reserved and moves when the refund settles."""
    DECLINED = "declined"
    """Refused by the card network at once; nothing moved."""
    FAILED = "failed"
    """Failed later: a pending refund that never moved money, or a succeeded one whose
    money came back (`refund_reversal`)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of money on a payment."""

    at: datetime
    type: EntryType
    amount: int
    idempotency_key: str | None


@dataclass(frozen=True)
class Balance:
    """A payment's totals, folded from its ledger.

    Attributes:
        captured: Captured plus recaptured money.
        refunded: Settled refunds, less those that failed afterwards.
        voided: Released authorizations.
        unrecaptured_refunds: Refunded money not yet recaptured.
        unrecaptured_voids: Voided money not yet recaptured.
        last_release_at: When money last went back (a refund or void); the recapture window
            counts from here.
    """

    captured: int = 0
    refunded: int = 0
    voided: int = 0
    unrecaptured_refunds: int = 0
    unrecaptured_voids: int = 0
    last_release_at: datetime | None = None

    @property
    def net_captured(self) -> int:
        """Money the merchant holds right now."""
        return self.captured - self.refunded

    @property
    def recapturable(self) -> int:
        """Money that went back to the customer and could be taken again."""
        return self.unrecaptured_refunds + self.unrecaptured_voids

    def refundable(self, pending_refunds: int) -> int:
        """Money a new refund may return; pending refunds are reserved so we never over-refund."""
        return self.net_captured - pending_refunds

    @property
    def status(self) -> PaymentStatus:
        """The payment's status."""
        if self.captured == 0:
            return PaymentStatus.VOIDED if self.voided else PaymentStatus.AUTHORIZED
        if self.net_captured == 0:
            return PaymentStatus.REFUNDED
        if self.unrecaptured_refunds:
            return PaymentStatus.PARTIALLY_REFUNDED
        return PaymentStatus.CAPTURED


def fold(entries: list[LedgerEntry]) -> Balance:
    """Compute a payment's balance from its ledger, oldest entry first."""
    balance = Balance()
    for entry in entries:
        balance = _apply(balance, entry)
    return balance


def _apply(balance: Balance, entry: LedgerEntry) -> Balance:
    match entry.type:
        case EntryType.AUTHORIZE:
            return balance
        case EntryType.CAPTURE:
            return dataclasses.replace(balance, captured=balance.captured + entry.amount)
        case EntryType.VOID:
            return dataclasses.replace(
                balance,
                voided=balance.voided + entry.amount,
                unrecaptured_voids=balance.unrecaptured_voids + entry.amount,
                last_release_at=entry.at,
            )
        case EntryType.REFUND:
            return dataclasses.replace(
                balance,
                refunded=balance.refunded + entry.amount,
                unrecaptured_refunds=balance.unrecaptured_refunds + entry.amount,
                last_release_at=entry.at,
            )
        case EntryType.RECAPTURE:
            # Refunds are the more recent release (a void only happens before any capture),
            # so a recapture restores them first and only then the voided authorization.
            from_refunds = min(entry.amount, balance.unrecaptured_refunds)
            return dataclasses.replace(
                balance,
                captured=balance.captured + entry.amount,
                unrecaptured_refunds=balance.unrecaptured_refunds - from_refunds,
                unrecaptured_voids=balance.unrecaptured_voids - (entry.amount - from_refunds),
            )
        case EntryType.REFUND_REVERSAL:
            # The refund never reached the customer after all; what was recaptured of it in
            # the meantime stays captured (the reconciliation's business, not the ledger's).
            return dataclasses.replace(
                balance,
                refunded=balance.refunded - entry.amount,
                unrecaptured_refunds=max(balance.unrecaptured_refunds - entry.amount, 0),
            )


@dataclass(frozen=True)
class RecaptureCheck:
    """The answer of the recapture check."""

    outcome: RecaptureOutcome
    until: datetime | None
    """End of the window while the outcome is `restorable`; None otherwise."""


def check_recapture(behavior: Behavior, balance: Balance, now: datetime) -> RecaptureCheck:
    """Decide whether money that went back to the customer can be taken again without them."""
    if balance.recapturable == 0 or balance.last_release_at is None:
        return RecaptureCheck(RecaptureOutcome.NOT_POSSIBLE, None)
    if behavior.recapture != RecaptureOutcome.RESTORABLE:
        return RecaptureCheck(behavior.recapture, None)
    until = balance.last_release_at + timedelta(seconds=behavior.recapture_window_seconds)
    if now < until:
        return RecaptureCheck(RecaptureOutcome.RESTORABLE, until)
    return RecaptureCheck(RecaptureOutcome.REAUTH_REQUIRED, None)
