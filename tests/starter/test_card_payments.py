"""Payments created for demos, loads, the bench and tests ride out the sandbox's faults."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from activities.provider_client import ProviderUnavailable
from starter import card_payments

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(provider_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The shared sandbox's own API, with its faults cleared after each test."""
    async with httpx.AsyncClient(base_url=provider_url, trust_env=False, timeout=10) as http:
        try:
            yield http
        finally:
            await http.put("/v1/faults", json={})


async def _heal_after(sandbox: httpx.AsyncClient, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await sandbox.put("/v1/faults", json={})


async def test_a_payment_made_but_unanswered_is_retried_into_the_same_payment(sandbox, provider):
    """Every POST applies, then answers 503, for a second: the creation is sent again with its
    key until the fault heals, and there is still one payment for the key."""
    key = f"test-{uuid.uuid4().hex}"
    await sandbox.put("/v1/faults", json={"error_after_effect_rate": 1})
    heal = asyncio.create_task(_heal_after(sandbox, 1.0))
    payment = await card_payments.create_payment(provider, 4200, "KRW", idempotency_key=key)
    await heal

    again = await sandbox.post(
        "/v1/payments",
        json={"amount": 4200, "currency": "KRW", "capture": True},
        headers={"Idempotency-Key": key},
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == payment["id"]
    assert [(e["type"], e["amount"]) for e in payment["ledger"]] == [
        ("authorize", 4200),
        ("capture", 4200),
    ]


async def test_a_provider_that_stays_down_is_reported_after_bounded_tries(
    sandbox, provider, monkeypatch
):
    monkeypatch.setattr(card_payments, "RETRY_MAX_SECONDS", 0.05)
    await sandbox.put("/v1/faults", json={"error_rate": 1})
    with pytest.raises(ProviderUnavailable):
        await card_payments.create_payment(provider, 100, "KRW")
