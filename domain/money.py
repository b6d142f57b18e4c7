"""Money as integer minor units plus an ISO 4217 currency. Never a float."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# 10^15 minor units is far beyond any order; the bound keeps sums inside PostgreSQL bigint.
MAX_AMOUNT = 10**15

Amount = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]
"""A non-negative amount in minor units (1 point or credit = 1 unit)."""

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 currency code such as ``KRW`` or ``USD``."""

# Currencies whose minor unit is the unit itself; used only to print amounts for people.
_ZERO_DECIMAL = frozenset({"KRW", "JPY", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"})


class Money(BaseModel):
    """An exact amount of one currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: Amount
    currency: Currency

    def __str__(self) -> str:
        return format_money(self.amount, self.currency)


def format_money(amount: int, currency: str) -> str:
    """Print an amount for people, e.g. ``30,000 KRW`` or ``12.50 USD``."""
    if currency in _ZERO_DECIMAL:
        return f"{amount:,} {currency}"
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole:,}.{cents:02d} {currency}"
