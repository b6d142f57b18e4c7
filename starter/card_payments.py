"""Card payments created at the provider by the demo, load-orders, the bench and the tests.

The sandbox's faults (``PUT /v1/faults``) strike ``POST /v1/payments`` like every other
POST: a ``503`` before the effect, a hang past the client's timeout, or the payment made
and then a ``503``. So every creation carries an ``Idempotency-Key`` and is sent again with
that same key while the provider does not answer, a bounded number of times: a retry after
an applied-but-unanswered creation gets the first payment back, never a second one.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final

from activities.provider_client import PaymentProviderClient, ProviderUnavailable

CREATE_ATTEMPTS: Final = 10
"""Tries per payment. Their pauses add up to about 11 s (plus any hang), longer than a
fault window of the chaos run (2–5 s), yet a provider that stays down is reported soon."""
RETRY_FIRST_SECONDS: Final = 0.1
RETRY_MAX_SECONDS: Final = 2.0


async def create_payment(
    provider: PaymentProviderClient,
    amount: int,
    currency: str,
    *,
    capture: bool = True,
    behavior: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    account: str | None = None,
) -> dict[str, Any]:
    """Create a card payment, retrying with one idempotency key while the provider is away.

    Args:
        idempotency_key: The key for every try; a fresh one when not given. Give a key
            derived from what the payment is for where the whole call may run again (a
            restarted load), so that it finds the first payment too.

    Raises:
        ProviderUnavailable: The provider did not answer in :data:`CREATE_ATTEMPTS` tries.
        ProviderRefused: The provider refused the payment (asking again changes nothing).
    """
    key = idempotency_key or f"payment-{uuid.uuid4().hex}"
    delay = RETRY_FIRST_SECONDS
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return await provider.create_payment(
                amount,
                currency,
                capture=capture,
                behavior=behavior,
                idempotency_key=key,
                account=account,
            )
        except ProviderUnavailable:
            if attempt == CREATE_ATTEMPTS:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)
    raise AssertionError("the loop returns or raises")  # pragma: no cover
