"""What a card tender must be at the payment provider before money can move for it.

A shop's token could otherwise name any payment id it has seen: another shop's, one in
another currency, or one with less money on it than the tender says. Checked when the
order is stored (``PUT …/orders/{order_id}``), from the payment as the shop's own
provider account shows it.
"""

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.order import Tender, TenderKind

PaymentStatus = Literal["authorized", "captured", "voided", "refunded", "partially_refunded"]


class ProviderPayment(BaseModel):
    """A card payment as the provider reports it (``GET /v1/payments/{id}``)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    amount: int
    currency: str
    status: PaymentStatus
    captured_amount: int = 0
    refunded_amount: int = 0

    @property
    def available(self) -> int:
        """What refunds or a void can still give back: the authorization while it is only
        authorized, what was captured less what was refunded once captured."""
        match self.status:
            case "authorized":
                return self.amount
            case "voided":
                return 0
            case _:
                return max(0, self.captured_amount - self.refunded_amount)


def card_tenders_by_payment(tenders: list[Tender]) -> dict[str, list[Tender]]:
    """The card tenders, grouped by the payment they name."""
    grouped: dict[str, list[Tender]] = defaultdict(list)
    for tender in tenders:
        if tender.kind is TenderKind.CARD and tender.payment_id is not None:
            grouped[tender.payment_id].append(tender)
    return dict(grouped)


def payment_mismatch(
    tenders: list[Tender], currency: str, payment: ProviderPayment | None
) -> str | None:
    """Why ``tenders`` (all naming one payment) can't be paid by ``payment``, or ``None``.

    ``payment`` is ``None`` when the shop's provider account has no such payment.
    """
    names = ", ".join(t.tender_id for t in tenders)
    payment_id = tenders[0].payment_id
    if payment is None:
        return f"tender {names}: payment {payment_id} is not a payment of this shop"
    if payment.currency != currency:
        return (
            f"tender {names}: payment {payment_id} is in {payment.currency},"
            f" the order in {currency}"
        )
    needed = sum(t.amount for t in tenders)
    if payment.available < needed:
        return (
            f"tender {names}: payment {payment_id} has {payment.available} {currency}"
            f" authorized or captured, the tender says {needed}"
        )
    return None
