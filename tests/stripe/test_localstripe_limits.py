"""What localstripe does not do like Stripe, checked so docs/providers.md stays true.

These tests talk to localstripe with plain HTTP, not through the adapter: they pin down
the fake's gaps that the adapter's own checks and the recorded-answer tests make up for.
If one fails, localstripe changed: update docs/providers.md ("localstripe") with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from tools import localstripe


@pytest_asyncio.fixture(loop_scope="session")
async def raw(localstripe_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=localstripe_url,
        auth=(localstripe.LOCALSTRIPE_API_KEY, ""),
        trust_env=False,
    ) as client:
        yield client


async def _post(raw: httpx.AsyncClient, path: str, data: dict[str, Any], **headers: str) -> Any:
    answer = await raw.post(path, data=data, headers=headers)
    return answer


async def _captured(raw: httpx.AsyncClient, amount: int = 1000, *, capture: bool = True) -> str:
    """A confirmed PaymentIntent's id: captured, or (``capture=False``) only authorized."""
    data: dict[str, Any] = {
        "amount": amount,
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "confirm": "true",
    }
    if not capture:
        data["capture_method"] = "manual"
    answer = await _post(raw, "/v1/payment_intents", data)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def test_localstripe_ignores_idempotency_keys(raw):
    intent = await _captured(raw)
    body = {"payment_intent": intent, "amount": "100"}

    first = await _post(raw, "/v1/refunds", body, **{"Idempotency-Key": "same"})
    second = await _post(raw, "/v1/refunds", body, **{"Idempotency-Key": "same"})

    assert first.json()["id"] != second.json()["id"]  # Stripe would answer the first again


async def test_localstripe_refunds_more_than_was_charged(raw):
    intent = await _captured(raw, 1000)

    answer = await _post(raw, "/v1/refunds", {"payment_intent": intent, "amount": "5000"})

    assert answer.status_code == 200  # Stripe: 400 amount_too_large
    assert answer.json()["status"] == "succeeded"


async def test_localstripe_refunds_an_uncaptured_payment_intent(raw):
    intent = await _captured(raw, capture=False)

    answer = await _post(raw, "/v1/refunds", {"payment_intent": intent, "amount": "100"})

    assert answer.status_code == 200  # Stripe refuses: nothing was captured


async def test_localstripe_refunds_are_succeeded_at_once(raw):
    """No pending, failed, canceled or requires_action refund, and no refund event."""
    intent = await _captured(raw)

    answer = await _post(raw, "/v1/refunds", {"payment_intent": intent, "amount": "100"})

    assert answer.json()["status"] == "succeeded"


async def test_localstripe_refuses_a_cancellation_reason(raw):
    intent = await _captured(raw, capture=False)

    answer = await _post(
        raw,
        f"/v1/payment_intents/{intent}/cancel",
        {"cancellation_reason": "requested_by_customer"},
    )

    assert answer.status_code == 400  # Stripe accepts it


async def test_localstripe_records_an_uncaptured_remainder_as_a_refund(raw):
    """A partial capture leaves a refund of the rest on the charge (no payment_intent)."""
    intent = await _captured(raw, capture=False)
    await _post(raw, f"/v1/payment_intents/{intent}/capture", {"amount_to_capture": "600"})

    refunds = (await raw.get("/v1/refunds", params={"payment_intent": intent})).json()["data"]

    assert [(r["amount"], r["payment_intent"]) for r in refunds] == [(400, None)]
    shown = (await raw.get(f"/v1/payment_intents/{intent}")).json()
    assert "amount_received" not in shown  # Stripe reports the 600 captured here
