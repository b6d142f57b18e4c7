"""Time-dependent sandbox behaviour, in process with a fake clock: settling and windows."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from provider_sandbox import create_app

pytestmark = pytest.mark.asyncio(loop_scope="session")

Json = dict[str, Any]

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    """A clock that only moves when told to."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Sandbox:
    client: httpx.AsyncClient
    clock: FakeClock


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A fresh in-process sandbox on its own database, running its lifespan."""
    clock = FakeClock()
    app = create_app(tmp_path / "sandbox.sqlite3", clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            yield Sandbox(client, clock)


async def create_payment(client: httpx.AsyncClient, **behavior: object) -> Json:
    body = {"amount": 1000, "currency": "EUR", "behavior": behavior}
    response = await client.post("/v1/payments", json=body)
    assert response.status_code == 201, response.text
    payment: Json = response.json()
    return payment


async def post(client: httpx.AsyncClient, path: str, amount: int, key: str) -> httpx.Response:
    return await client.post(path, json={"amount": amount}, headers={"Idempotency-Key": key})


async def get(client: httpx.AsyncClient, path: str) -> Json:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def at(seconds: float) -> str:
    """The sandbox's rendering of START plus some seconds."""
    return (START + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


class TestSettlement:
    async def test_pending_refund_settles_at_its_time(self, sandbox: Sandbox) -> None:
        client, clock = sandbox.client, sandbox.clock
        payment = await create_payment(client, refund="pending", settle_after_seconds=5)
        created = (await post(client, f"/v1/payments/{payment['id']}/refunds", 400, "k1")).json()

        clock.advance(4.999)
        still_pending = await get(client, f"/v1/refunds/{created['id']}")
        clock.advance(10)
        settled = await get(client, f"/v1/refunds/{created['id']}")

        assert (created["status"], still_pending["status"]) == ("pending", "pending")
        assert (settled["status"], settled["settled_at"]) == ("succeeded", at(5))
        after = await get(client, f"/v1/payments/{payment['id']}")
        assert after["ledger"][-1] == {
            "at": at(5),
            "type": "refund",
            "amount": 400,
            "idempotency_key": "k1",
        }
        assert (after["status"], after["refunded_amount"]) == ("partially_refunded", 400)

    async def test_reading_the_payment_settles_due_refunds(self, sandbox: Sandbox) -> None:
        client, clock = sandbox.client, sandbox.clock
        payment = await create_payment(client, refund="pending", settle_after_seconds=60)
        await post(client, f"/v1/payments/{payment['id']}/refunds", 1000, "k1")

        clock.advance(60)
        after = await get(client, f"/v1/payments/{payment['id']}")

        assert (after["status"], after["refunded_amount"]) == ("refunded", 1000)
        assert after["pending_refund_amount"] == 0


class TestRecaptureWindow:
    async def test_window_expiry_turns_restorable_into_reauth_required(
        self, sandbox: Sandbox
    ) -> None:
        client, clock = sandbox.client, sandbox.clock
        payment = await create_payment(client, recapture_window_seconds=60)
        path = f"/v1/payments/{payment['id']}/recapture"
        await post(client, f"/v1/payments/{payment['id']}/refunds", 1000, "refund")

        clock.advance(59.999)
        inside = await get(client, path)
        clock.advance(0.001)
        outside = await get(client, path)
        refused = await post(client, path, 1000, "recapture")

        assert inside == {"outcome": "restorable", "until": at(60)}
        assert outside == {"outcome": "reauth_required", "until": None}
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "recapture_unavailable"
        ledger = (await get(client, f"/v1/payments/{payment['id']}"))["ledger"]
        assert [entry["type"] for entry in ledger] == ["authorize", "capture", "refund"]

    async def test_window_counts_from_the_latest_refund(self, sandbox: Sandbox) -> None:
        client, clock = sandbox.client, sandbox.clock
        payment = await create_payment(client, recapture_window_seconds=100)
        await post(client, f"/v1/payments/{payment['id']}/refunds", 100, "first")
        clock.advance(50)
        await post(client, f"/v1/payments/{payment['id']}/refunds", 100, "second")

        clock.advance(90)
        check = await get(client, f"/v1/payments/{payment['id']}/recapture")
        recaptured = await post(client, f"/v1/payments/{payment['id']}/recapture", 200, "back")

        assert check == {"outcome": "restorable", "until": at(150)}
        assert recaptured.status_code == 200
        assert recaptured.json()["ledger"][-1]["at"] == at(140)

    async def test_window_of_a_void_counts_from_the_void(self, sandbox: Sandbox) -> None:
        client, clock = sandbox.client, sandbox.clock
        body = {"amount": 500, "currency": "EUR", "capture": False}
        payment = (await client.post("/v1/payments", json=body)).json()
        clock.advance(10)
        await client.post(f"/v1/payments/{payment['id']}/void", headers={"Idempotency-Key": "v"})

        check = await get(client, f"/v1/payments/{payment['id']}/recapture")

        assert check == {"outcome": "restorable", "until": at(10 + 86400)}
