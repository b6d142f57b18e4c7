"""Refund planning: which tender gets how much back, and how (rules 6, 8, 9, 10).

Pure functions of the order and what earlier cancellations already refunded.

Rule numbers are those of ``docs/rules.md``.
"""

from collections.abc import Mapping, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from domain.order import MONEY_TENDERS, Order, Tender, TenderKind


class RefundMethod(StrEnum):
    """How money tenders go back to the customer (the merchant's choice at acceptance)."""

    ORIGINAL = "original"
    """Back to the source: provider refund (void when only authorized); bank deposit
    for bank transfers; balances for points and credits."""
    BANK_DEPOSIT = "bank_deposit"
    """A manual transfer the merchant confirms; needs the customer's bank account."""
    CREDITS = "credits"
    """Store credit instead of money."""


class RefundChannel(StrEnum):
    """Who carries out a refund line; decided by tender kind and method."""

    PROVIDER = "provider"
    """The payment provider refunds or voids the card payment."""
    BANK_DEPOSIT = "bank_deposit"
    """The merchant transfers the money and confirms it."""
    POINTS = "points"
    """Points go back to the customer's balance."""
    CREDITS = "credits"
    """Credits go to the customer's balance."""


class PlannedRefund(BaseModel):
    """One line of a refund plan: a tender, the method and the amount."""

    model_config = ConfigDict(frozen=True)

    tender_id: str
    tender_kind: TenderKind
    method: RefundMethod
    channel: RefundChannel
    amount: int
    payment_id: str | None = None


class RefundPlan(BaseModel):
    """What an acceptance would refund (the quote of rule 9)."""

    model_config = ConfigDict(frozen=True)

    currency: str
    refundable: int
    lines: list[PlannedRefund]

    @property
    def needs_bank_account(self) -> bool:
        """Whether any line is a manual bank deposit."""
        return any(line.channel is RefundChannel.BANK_DEPOSIT for line in self.lines)


def refund_channel(kind: TenderKind, method: RefundMethod) -> RefundChannel:
    """Who carries out the refund of a tender of this kind under this method."""
    if kind is TenderKind.POINTS:
        return RefundChannel.POINTS
    if kind is TenderKind.CREDITS or method is RefundMethod.CREDITS:
        return RefundChannel.CREDITS
    if method is RefundMethod.BANK_DEPOSIT or kind is TenderKind.BANK_TRANSFER:
        return RefundChannel.BANK_DEPOSIT
    return RefundChannel.PROVIDER


def line_method(kind: TenderKind, method: RefundMethod) -> RefundMethod:
    """The method a line records: the merchant's choice applies to money tenders only."""
    return method if kind in MONEY_TENDERS else RefundMethod.ORIGINAL


def plan_refund(
    order: Order,
    method: RefundMethod,
    *,
    amount: int | None = None,
    refunded_by_tender: Mapping[str, int] | None = None,
) -> RefundPlan:
    """Spread a refundable amount over the order's tenders.

    Args:
        order: The order with its tenders.
        method: The merchant's refund method for money tenders.
        amount: What to refund; the whole remaining order when ``None``.
        refunded_by_tender: What earlier cancellations already refunded per tender.

    The amount is split in proportion to what each tender can still refund, rounded
    by largest remainder, so lines add up exactly and no tender gets back more than
    it paid. Zero-amount lines are left out.
    """
    refunded = refunded_by_tender or {}
    remaining = {t.tender_id: t.amount - refunded.get(t.tender_id, 0) for t in order.tenders}
    total_remaining = sum(remaining.values())
    target = total_remaining if amount is None else amount
    if not 0 <= target <= total_remaining:
        raise ValueError(f"refund of {target} exceeds what the tenders can still refund")
    shares = apportion(target, [remaining[t.tender_id] for t in order.tenders])
    lines = [
        _planned(tender, method, share)
        for tender, share in zip(order.tenders, shares, strict=True)
        if share > 0
    ]
    return RefundPlan(currency=order.currency, refundable=target, lines=lines)


def _planned(tender: Tender, method: RefundMethod, amount: int) -> PlannedRefund:
    return PlannedRefund(
        tender_id=tender.tender_id,
        tender_kind=tender.kind,
        method=line_method(tender.kind, method),
        channel=refund_channel(tender.kind, method),
        amount=amount,
        payment_id=tender.payment_id,
    )


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder.

    The parts add up to ``total`` exactly and none exceeds its weight when
    ``total <= sum(weights)``. Ties in the remainder go to the earlier weight, so
    the result is deterministic.
    """
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        if total:
            raise ValueError("nothing to spread the amount over")
        return [0] * len(weights)
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    leftover = total - sum(floors)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[:leftover]:
        floors[i] += 1
    return floors
