"""The payment provider port: the calls every provider adapter offers the activities.

The activities and the hook are typed against the sandbox's
:class:`~activities.provider_client.PaymentProviderClient` today; once it has every call
below, they can take a :class:`PaymentProvider` instead, and the Stripe adapter no longer
needs to subclass the sandbox's client. Answers are plain dicts (docs/providers.md, "The
port"); failures are the exception tree of :mod:`activities.provider_client`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class PaymentProvider(Protocol):
    """What the activities may ask of a card payment provider."""

    async def get_payment(self, payment_id: str, *, account: str | None = None) -> dict[str, Any]:
        """The payment: id, amount, currency, status, captured and refunded amounts."""
        ...

    async def refund(
        self,
        payment_id: str,
        amount: int,
        idempotency_key: str,
        *,
        account: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Refund part of a captured payment; ``metadata`` carries our refund id."""
        ...

    async def get_refund(self, refund_id: str, *, account: str | None = None) -> dict[str, Any]:
        """A refund as it stands now."""
        ...

    async def list_refunds(
        self, payment_id: str, *, account: str | None = None
    ) -> list[dict[str, Any]]:
        """Every refund of the payment, each with its metadata."""
        ...

    async def void(
        self,
        payment_id: str,
        idempotency_key: str,
        *,
        account: str | None = None,
        amount: int | None = None,
    ) -> dict[str, Any]:
        """Release all of an authorization, or ``amount`` of it; the answer has ``released``."""
        ...

    async def recapture_check(
        self, payment_id: str, *, account: str | None = None
    ) -> dict[str, Any]:
        """``{outcome, until}``: whether refunded or voided money can be taken again."""
        ...

    async def recapture(
        self, payment_id: str, amount: int, idempotency_key: str, *, account: str | None = None
    ) -> dict[str, Any]:
        """Take back money that was refunded or voided."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...
