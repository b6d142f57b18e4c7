"""One catalog of the cancellation situations of the store-admin guide, for every tool.

The demo (:mod:`tools.demo`), the chaos driver (:mod:`tools.chaos_driver`) and the bench's
product mix (:mod:`tools.bench`) each pick their situations from :data:`SITUATIONS`: a
situation says, once, who opens it, how the order is paid, how the money goes back and what it
must end in. The tools add only how they walk it (the demo's checks, the chaos run's random
amounts and timings, the bench's clock). A rule change, say what a situation ends in or how it
is paid, is made here and every tool follows.

This module is pure data: it imports nothing of the product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

Opener = Literal["customer", "merchant"]
TenderKindName = Literal["card", "bank_transfer", "points", "credits"]
"""``domain.order.TenderKind`` values."""
PaidBack = Literal["original", "credits", "nothing"]
Tool = Literal["demo", "chaos", "bench"]

CUSTOMER: tuple[Opener, ...] = ("customer",)
MERCHANT: tuple[Opener, ...] = ("merchant",)
EITHER: tuple[Opener, ...] = ("customer", "merchant")


@dataclass(frozen=True)
class TenderPart:
    """One tender of the mix: its kind and its share of the total (None: what is left)."""

    kind: TenderKindName
    share: Fraction | None = None


TenderMix = tuple[TenderPart, ...]
"""How an order is paid, tender by tender in order (``t1``, ``t2``, …); empty: nothing paid."""

CARD: TenderMix = (TenderPart("card"),)
BANK: TenderMix = (TenderPart("bank_transfer"),)
NOTHING_PAID: TenderMix = ()


def split(mix: TenderMix, total: int) -> list[tuple[TenderKindName, int]]:
    """The tenders' amounts for an order of ``total``: each part its share (rounded down), the
    part without a share what is left. Parts that come to nothing are left out."""
    shares = [None if part.share is None else int(total * part.share) for part in mix]
    left = total - sum(amount for amount in shares if amount is not None)
    amounts = [left if amount is None else amount for amount in shares]
    return [(part.kind, amount) for part, amount in zip(mix, amounts, strict=True) if amount > 0]


@dataclass(frozen=True)
class Situation:
    """One situation of the guide, as every tool must see it."""

    key: str
    """Stable identifier; the chaos run's shape name where the chaos run walks it."""
    name: str
    """The guide's name (the demo's scenario name, ``<section>-<words>``)."""
    title: str
    """The guide's words."""
    opened_by: tuple[Opener, ...]
    """Who opens it; both when the guide lets either (the tools differ in which they take)."""
    tenders: TenderMix
    """How the order is paid."""
    refund: str
    """The refund's route, in words."""
    ends: str | None
    """The cancellation's final status (``CancellationStatus``); None when it is refused."""
    used_by: frozenset[Tool]
    """The tools that walk it (checked by ``tests/starter/test_situations.py``)."""
    section: str | None = None
    """The guide's section (the demo's scenario key, ``a``…``p``); None outside the guide's
    list (situations only a stress tool walks)."""
    refused: str | None = None
    """The refusal code (``ErrorCode``) it meets on the way, when it meets one."""
    parts: int = 1
    """How many cancellations the order takes (a partial cancellation, then the rest)."""
    order_canceled: bool = True
    """Whether the order ends canceled; otherwise it ends as it was before (or back to it)."""
    restock: bool = True
    """Whether the canceled items go back in stock (not when sold out or defective)."""
    paid_back: PaidBack = "original"
    """Where the money finally goes: the original tenders, or store credit."""
    capture: bool = True
    """Whether the card payment is captured (False: only authorized)."""
    card_behavior: Mapping[str, Any] = field(default_factory=dict)
    """The sandbox behavior of the card payment that makes the situation (the tools may add
    timings)."""

    @property
    def expected(self) -> str:
        """What it should end in, in the demo's words: ``canceled``, ``refused order_shipped``,
        ``recapture_unavailable → undone``, ``paid → paid → canceled``."""
        if self.ends is None:
            return f"refused {self.refused}"
        if self.parts > 1:
            return " → ".join(["paid"] * (self.parts - 1) + [self.ends])
        return f"{self.refused} → {self.ends}" if self.refused else self.ends

    def split(self, total: int) -> list[tuple[TenderKindName, int]]:
        """The tenders of an order of ``total`` paid as this situation is."""
        return split(self.tenders, total)

    def pays_with(self, kind: TenderKindName) -> bool:
        """Whether the order is paid (partly) with ``kind``."""
        return any(part.kind == kind for part in self.tenders)


_DEMO = frozenset[Tool]({"demo"})
_CHAOS = frozenset[Tool]({"chaos"})
_DEMO_CHAOS = frozenset[Tool]({"demo", "chaos"})
_EVERY_TOOL = frozenset[Tool]({"demo", "chaos", "bench"})

SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "card_request_accepted", "a-request-accepted",
        "Customer requests from My Account, merchant accepts (card, captured)",
        CUSTOMER, CARD, "card refunded", "canceled",
        _EVERY_TOOL, section="a",
    ),
    Situation(
        "requests_disabled_phoned", "b-requests-disabled-phoned",
        "Requests are off in the shop; the customer phones and the merchant enters it",
        EITHER, CARD, "card refunded", "canceled", _DEMO, section="b",
        refused="customer_requests_disabled",
    ),
    Situation(
        "order_shipped", "c-order-shipped",
        "The order is in transit already: process it as a return",
        CUSTOMER, CARD, "none: no cancellation starts", None, _DEMO, section="c",
        refused="order_shipped", order_canceled=False, paid_back="nothing",
    ),
    Situation(
        "sold_out", "d-sold-out", "Merchant cancels: sold out",
        MERCHANT, CARD, "card refunded", "canceled", _DEMO, section="d1", restock=False,
    ),
    Situation(
        "undeliverable_area", "d-undeliverable-area", "Merchant cancels: the area is not served",
        MERCHANT, CARD, "card refunded", "canceled", _DEMO, section="d2",
    ),
    Situation(
        "defective_not_restocked", "e-defective-no-restock",
        "Merchant cancels: defective item, not restocked",
        MERCHANT, CARD, "card refunded", "canceled", _DEMO_CHAOS, section="e", restock=False,
    ),
    Situation(
        "rejected", "f-request-rejected", "Merchant rejects the customer's request",
        CUSTOMER, CARD, "none", "rejected", _DEMO_CHAOS, section="f1",
        order_canceled=False, paid_back="nothing",
    ),
    Situation(
        "withdrawn", "f-request-withdrawn", "Customer withdraws the request",
        CUSTOMER, CARD, "none", "withdrawn", _DEMO_CHAOS, section="f2",
        order_canceled=False, paid_back="nothing",
    ),
    Situation(
        "card_authorized_voided", "g-authorized-card-voided",
        "Card only authorized: the payment is voided",
        EITHER, CARD, "authorization voided", "canceled", _DEMO_CHAOS, section="g",
        capture=False,
    ),
    Situation(
        "bank_transfer_confirmed", "h-bank-deposit-confirmed",
        "Bank transfer: refund by bank deposit, confirmed by the merchant",
        CUSTOMER, BANK, "bank deposit, confirmed by the merchant", "canceled",
        _EVERY_TOOL, section="h",
    ),
    Situation(
        "points_and_credits", "i-points-and-credits",
        "Paid in points and credits: canceled at once",
        EITHER, (TenderPart("points", Fraction(2, 5)), TenderPart("credits")),
        "balances given back", "canceled", _DEMO_CHAOS, section="i1",
    ),
    Situation(
        "zero_amount", "i-zero-amount-order", "A $0 order: canceled at once",
        CUSTOMER, NOTHING_PAID, "none: nothing was paid", "canceled", _DEMO, section="i2",
        paid_back="nothing",
    ),
    Situation(
        "unpaid", "i-unpaid-order", "An unpaid order: canceled at once",
        CUSTOMER, NOTHING_PAID, "none: nothing was paid", "canceled", _DEMO, section="i3",
        paid_back="nothing",
    ),
    Situation(
        "declined_then_credits", "j-refund-declined-retried-as-credits",
        "Refund declined by the provider; the merchant retries it as store credit",
        MERCHANT, CARD, "card refund declined, retried as store credit", "canceled",
        _DEMO_CHAOS, section="j", paid_back="credits", card_behavior={"refund": "decline"},
    ),
    Situation(
        "card_refund_pending", "k-pending-refund-settles",
        "Pending refund: processing, then settled",
        EITHER, CARD, "card refund pending, then settled", "canceled", _DEMO_CHAOS,
        section="k", card_behavior={"refund": "pending"},
    ),
    Situation(
        "quote_first", "l-refund-quote", "Refund quote before accepting",
        CUSTOMER, (TenderPart("points", Fraction(1, 4)), TenderPart("card")),
        "as quoted: points given back, card refunded", "canceled", _DEMO, section="l",
    ),
    Situation(
        "undo_recaptured", "m-undo-recaptured",
        "Undo after the refund: the provider recaptures the card payment",
        EITHER, CARD, "card refunded, then recaptured", "undone", _DEMO_CHAOS, section="m1",
        order_canceled=False,
    ),
    Situation(
        "undo_while_in_progress", "m-undo-in-progress",
        "Undo while the refund is still in progress: unexecuted refunds are called off",
        CUSTOMER, BANK, "bank deposit called off before it was made", "undone", _DEMO_CHAOS,
        section="m2", order_canceled=False,
    ),
    Situation(
        "undo_with_repayment", "m-undo-recapture-unavailable",
        "Undo when the provider can't recapture: refused, then the customer pays again",
        EITHER, CARD, "card refunded; the customer pays again on undo", "undone", _DEMO_CHAOS,
        section="m3", refused="recapture_unavailable", order_canceled=False,
        card_behavior={"recapture": "not_possible"},
    ),
    Situation(
        "undo_bank_repaid", "n-undo-bank-deposit-repaid",
        "Undo after a bank-deposit refund: the customer pays for the order again",
        EITHER, BANK, "bank deposit confirmed; the customer pays again on undo", "undone",
        _DEMO_CHAOS, section="n", order_canceled=False,
    ),
    Situation(
        "partial_in_three_steps", "o-partial-in-three-steps",
        "Card + points + credits canceled in three steps; the shipping fee goes last",
        MERCHANT,
        (TenderPart("points", Fraction(1, 5)), TenderPart("credits", Fraction(1, 5)),
         TenderPart("card")),
        "each step's share over the tenders", "canceled", _DEMO, section="o", parts=3,
    ),
    Situation(
        "partial_undone", "p-partial-undone",
        "Undo of a partial cancellation restores exactly its items",
        MERCHANT, CARD, "that part's card refund, then recaptured", "undone", _DEMO_CHAOS,
        section="p", order_canceled=False,
    ),
    # Beyond the guide's list: the chaos run's and the bench's variations.
    Situation(
        "mixed_tenders", "mixed-tenders", "Card, points and credits: each goes back to its source",
        CUSTOMER,
        (TenderPart("card"), TenderPart("points", Fraction(1, 5)),
         TenderPart("credits", Fraction(1, 4))),
        "each tender to its source", "canceled", _CHAOS,
    ),
    Situation(
        "card_refund_reversed", "card-refund-reversed",
        "The card refund is reversed after it succeeded; the merchant switches it to credits",
        MERCHANT, CARD, "card refunded, reversed, paid as store credit", "canceled", _CHAOS,
        paid_back="credits", card_behavior={"refund": "fail_after_success"},
    ),
    Situation(
        "card_as_credits", "card-as-credits", "The merchant refunds a card order as store credit",
        CUSTOMER, CARD, "store credit instead of the card", "canceled", _CHAOS,
        paid_back="credits",
    ),
    Situation(
        "undo_void_recaptured", "undo-void-recaptured",
        "An authorization voided, then undone: the provider authorizes it again",
        MERCHANT, CARD, "authorization voided, then recaptured", "undone", _CHAOS,
        order_canceled=False, capture=False,
    ),
    Situation(
        "undo_points_taken_back", "undo-points-taken-back",
        "Points and credits returned, then taken back by the undo",
        MERCHANT, (TenderPart("points", Fraction(1, 2)), TenderPart("credits")),
        "balances given back, then taken back", "undone", _CHAOS, order_canceled=False,
    ),
    Situation(
        "partial_then_rest", "partial-then-rest",
        "One unit canceled first, the rest (with the shipping fee) later",
        MERCHANT, CARD, "two card refunds that add up to the order", "canceled", _CHAOS,
        parts=2,
    ),
    Situation(
        "bulk_sold_out", "bulk-sold-out",
        "A SKU sells out: a bulk job cancels the order's line of it",
        MERCHANT, CARD, "that line's card refund", "canceled", _CHAOS, order_canceled=False,
        restock=False,
    ),
    Situation(
        "card_and_points_accepted", "card-and-points-accepted",
        "Customer requests, merchant accepts (points and card)",
        CUSTOMER, (TenderPart("points", Fraction(1, 6)), TenderPart("card")),
        "points given back, card refunded", "canceled", frozenset({"bench"}),
    ),
)  # fmt: skip
"""Every situation, the guide's first and in its order."""

BY_KEY: Mapping[str, Situation] = {situation.key: situation for situation in SITUATIONS}


def situation(key: str) -> Situation:
    """The catalog's situation ``key``.

    Raises:
        KeyError: No situation has that key.
    """
    return BY_KEY[key]
