"""Bodies that exist only at the HTTP edge; the domain's requests and views are reused as is."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_serializer, field_validator

from domain.cancellation import CancellationView
from domain.money import Amount, Currency
from domain.shop import ShopSettings

# The stock table's column is a PostgreSQL integer.
MAX_STOCK = 1_000_000_000
"""Units of one SKU; with quantities capped at 10^6 per item, restocks can't overflow."""


class CancellationPage(BaseModel):
    """A list of cancellations, newest first; ``next_cursor`` fetches the next page."""

    items: list[CancellationView]
    next_cursor: str | None = None


class SettingsDocument(ShopSettings):
    """The shop's settings as the hook reads and writes them.

    Durations go out in the RFC 3339 form JSON Schema's ``duration`` format means: days
    and time only (``P30D``, ``P1DT12H``), because years and months have no fixed length
    (pydantic's own ISO output would say ``P5Y340D``). They come in as any ISO 8601
    duration pydantic reads, in whole seconds.
    """

    @field_validator("request_reminder_after", "undo_window", "repayment_window")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        if value.microseconds:
            raise ValueError("durations are whole seconds")
        return value

    @field_serializer("request_reminder_after", "undo_window", "repayment_window", when_used="json")
    def _rfc3339(self, value: timedelta) -> str:
        return rfc3339_duration(value)


def rfc3339_duration(value: timedelta) -> str:
    """``timedelta(days=1, hours=2)`` → ``P1DT2H``; units between the first and the last
    non-zero one are written even when zero (``PT1H0M5S``), as RFC 3339 requires."""
    days, rest = divmod(int(value.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = [(hours, "H"), (minutes, "M"), (seconds, "S")]
    used = [n for n, (amount, _) in enumerate(time) if amount]
    clock = "".join(f"{a}{u}" for a, u in time[used[0] : used[-1] + 1]) if used else ""
    text = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return text if text != "P" else "PT0S"


class Stock(BaseModel):
    """Units of a SKU the shop can sell (``PUT``/``GET …/stock/{sku}``)."""

    model_config = ConfigDict(extra="forbid")

    available: Annotated[StrictInt, Field(ge=0, le=MAX_STOCK)]


class Balances(BaseModel):
    """A customer's store balances, in minor units of the shop's currency."""

    model_config = ConfigDict(extra="forbid")

    points: Amount = 0
    credits: Amount = 0
    currency: Currency | None = None
    """The currency of both balances: set once (here, or by the first order paying with
    them); orders in another currency can't pay with them."""


class FulfillmentUpdate(BaseModel):
    """Fulfillment progress a backend service reports (``POST …/fulfillment``)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["preparing", "ready_to_ship", "in_transit", "delivered"]


class WebhookRefund(BaseModel):
    """The refund a provider event is about (the sandbox's refund object)."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1, max_length=128)]
    payment_id: Annotated[str, Field(min_length=1, max_length=128)]
    status: Annotated[str, Field(max_length=64)]


class ProviderEvent(BaseModel):
    """A signed provider callback, e.g. ``refund.succeeded``."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1, max_length=128)]
    type: Annotated[str, Field(min_length=1, max_length=64)]
    account: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """The provider account the event happened in; ``None`` for the default account."""
    refund: WebhookRefund | None = None


class WebhookAnswer(BaseModel):
    """``ignored`` when no open cancellation waits for this refund (the provider stops)."""

    ignored: bool


class Health(BaseModel):
    """Whether the hook's dependencies answer (``GET /healthz``)."""

    status: Literal["ok", "unavailable"]
    temporal: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
