"""The provider sandbox as a real process: its HTTP contract, durability and webhooks.

One sandbox process serves the whole module (started with `--port 0`, found through the line
it prints, checked through `/healthz`); the durability tests start their own processes on
their own database files, so they can stop and restart them.
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

pytestmark = pytest.mark.asyncio(loop_scope="session")

Json = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "sandbox-test-secret"
# A cold machine may take a few seconds to import Starlette and uvicorn.
STARTUP_TIMEOUT_SECONDS = 20.0
# SIGTERM stops the sandbox in well under a second; more means it ignored the signal.
STOP_TIMEOUT_SECONDS = 5.0
WEBHOOK_TIMEOUT_SECONDS = 10.0
SIGNATURE_CLOCK_SLACK_SECONDS = 30
LISTENING_LINE = re.compile(rb"provider sandbox listening on (http://\S+)")


# -- a sandbox process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxProcess:
    """A running `python -m provider_sandbox`."""

    url: str
    process: asyncio.subprocess.Process


@contextlib.asynccontextmanager
async def running_sandbox(
    db_path: Path,
    *,
    webhook_url: str | None = None,
    flags: Sequence[str] = (),
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[SandboxProcess]:
    """Run the sandbox on a free port until the block ends, then stop it with SIGTERM.

    The webhook settings go through the environment, so the env fallbacks get exercised too;
    `flags` go on the command line and `settings` into the environment.
    The sandbox's stderr is inherited, so pytest shows its warnings next to a failing test.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMENT_")}
    if webhook_url is not None:
        env["PAYMENT_PROVIDER_WEBHOOK_URL"] = webhook_url
        env["PAYMENT_PROVIDER_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    env.update(settings or {})
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "provider_sandbox", "--port", "0", "--db", str(db_path)],
        *flags,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        url = await _announced_url(process)
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"{url}/healthz")).json() == {"status": "ok"}
        yield SandboxProcess(url, process)
    finally:
        await stop(process)


async def _announced_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_SECONDS)
    match = LISTENING_LINE.fullmatch(line.strip())
    if match is None:
        raise RuntimeError(
            f"the sandbox did not start (exit status {process.returncode}): {line!r}"
        )
    return match.group(1).decode()


async def stop(process: asyncio.subprocess.Process) -> int:
    """Send SIGTERM to the process by its pid and return its exit status."""
    if process.returncode is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        raise AssertionError("the sandbox ignored SIGTERM") from None


# -- a webhook receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One webhook request the receiver got, and what it answered."""

    headers: dict[str, str]
    body: bytes
    answered: int
    at: float = field(default_factory=time.monotonic)
    """When it arrived (`time.monotonic()`)."""

    @property
    def event(self) -> Json:
        parsed: Json = json.loads(self.body)
        return parsed


@dataclass
class WebhookReceiver:
    """A tiny HTTP server that records webhook posts; it can be told to fail."""

    url: str = ""
    failures_left: int = 0
    """Answer 500 to this many requests before answering 200 again."""
    deliveries: list[Delivery] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        status = 500 if self.failures_left > 0 else 200
        self.failures_left = max(self.failures_left - 1, 0)
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()
        async with self._arrived:
            self.deliveries.append(Delivery(headers, body, status))
            self._arrived.notify_all()

    async def wait_for(self, refund_id: str, *, answered: int = 200) -> list[Delivery]:
        """All deliveries about a refund, once one of them got the given answer."""

        def about_refund() -> list[Delivery]:
            return [d for d in self.deliveries if d.event["refund"]["id"] == refund_id]

        def done() -> bool:
            return any(d.answered == answered for d in about_refund())

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(done), WEBHOOK_TIMEOUT_SECONDS)
        return about_refund()

    async def wait_for_all(self, refund_ids: set[str], deliveries: int) -> list[Delivery]:
        """The deliveries about these refunds, once there are at least `deliveries` of them."""

        def about_refunds() -> list[Delivery]:
            return [d for d in self.deliveries if d.event["refund"]["id"] in refund_ids]

        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(about_refunds()) >= deliveries),
                WEBHOOK_TIMEOUT_SECONDS,
            )
        return about_refunds()


def assert_signed_now(delivery: Delivery) -> None:
    """The delivery carries `X-Signature: t=<now>,v1=<HMAC of "<t>.<body>">`."""
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", delivery.headers["x-signature"])
    assert match is not None, delivery.headers["x-signature"]
    timestamp, signature = match.groups()
    signed = f"{timestamp}.".encode() + delivery.body
    expected = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    # The timestamp is the wall-clock time of the attempt, whatever the provider clock says.
    assert abs(int(timestamp) - time.time()) < SIGNATURE_CLOCK_SLACK_SECONDS


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port."""
    webhook_receiver = WebhookReceiver()
    server = await asyncio.start_server(webhook_receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    webhook_receiver.url = f"http://127.0.0.1:{port}/hooks/psp"
    async with server:
        yield webhook_receiver


# -- the shared sandbox and its client ------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sandbox(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> AsyncIterator[SandboxProcess]:
    """The sandbox shared by this module, sending webhooks to `receiver`."""
    db_path = tmp_path_factory.mktemp("sandbox") / "sandbox.sqlite3"
    async with running_sandbox(db_path, webhook_url=receiver.url) as process:
        yield process


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(sandbox: SandboxProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the shared sandbox."""
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10.0, trust_env=False) as http:
        yield http


SetFaults = Callable[..., Awaitable[None]]


@pytest_asyncio.fixture(loop_scope="session")
async def faults(client: httpx.AsyncClient) -> AsyncIterator[SetFaults]:
    """Sets the sandbox's faults for one test and clears them afterwards, even on failure."""

    async def set_faults(**config: float) -> None:
        response = await client.put("/v1/faults", json=config)
        assert response.status_code == 200, response.text

    yield set_faults
    await set_faults()


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


async def create_payment(
    client: httpx.AsyncClient,
    amount: int = 1000,
    *,
    capture: bool = True,
    key: str | None = None,
    **behavior: object,
) -> Json:
    body: Json = {"amount": amount, "currency": "EUR", "capture": capture}
    if behavior:
        body["behavior"] = behavior
    headers = {"Idempotency-Key": key} if key else {}
    response = await client.post("/v1/payments", json=body, headers=headers)
    assert response.status_code == 201, response.text
    payment: Json = response.json()
    return payment


async def post(
    client: httpx.AsyncClient, path: str, body: Json | None = None, key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key or new_key()}
    return await client.post(path, json=body if body is not None else {}, headers=headers)


async def refund(
    client: httpx.AsyncClient, payment_id: str, amount: int, key: str | None = None
) -> httpx.Response:
    return await post(client, f"/v1/payments/{payment_id}/refunds", {"amount": amount}, key)


async def get_payment(client: httpx.AsyncClient, payment_id: str) -> Json:
    response = await client.get(f"/v1/payments/{payment_id}")
    assert response.status_code == 200, response.text
    payment: Json = response.json()
    return payment


def movements(payment: Json) -> list[tuple[str, int]]:
    return [(entry["type"], entry["amount"]) for entry in payment["ledger"]]


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# -- tests ---------------------------------------------------------------------------------------


class TestPayments:
    async def test_captured_payment_has_authorize_and_capture_entries(
        self, client: httpx.AsyncClient
    ) -> None:
        key = new_key()
        created = await create_payment(client, 2500, key=key)

        payment = await get_payment(client, created["id"])
        assert created == payment
        assert payment["id"].startswith("pay_")
        assert payment["status"] == "captured"
        assert (payment["captured_amount"], payment["refunded_amount"]) == (2500, 0)
        assert movements(payment) == [("authorize", 2500), ("capture", 2500)]
        assert {entry["idempotency_key"] for entry in payment["ledger"]} == {key}

    async def test_uncaptured_payment_is_only_authorized(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, 700, capture=False)

        assert payment["status"] == "authorized"
        assert payment["captured_amount"] == 0
        assert movements(payment) == [("authorize", 700)]

    async def test_behavior_defaults_are_reported(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)

        assert payment["behavior"] == {
            "refund": "succeed",
            "settle_after_seconds": 5.0,
            "fail_after_seconds": 5.0,
            "recapture": "restorable",
            "recapture_window_seconds": 86400.0,
        }

    async def test_creation_is_idempotent_when_keyed(self, client: httpx.AsyncClient) -> None:
        key = new_key()
        first = await create_payment(client, key=key)
        second = await create_payment(client, key=key)

        assert first == second

    async def test_unknown_payment_and_refund_are_404(self, client: httpx.AsyncClient) -> None:
        payment = await client.get("/v1/payments/pay_missing")
        refund_response = await client.get("/v1/refunds/re_missing")
        refund_post = await refund(client, "pay_missing", 100)

        assert (payment.status_code, error_code(payment)) == (404, "payment_not_found")
        assert (refund_response.status_code, error_code(refund_response)) == (
            404,
            "refund_not_found",
        )
        assert (refund_post.status_code, error_code(refund_post)) == (404, "payment_not_found")


class TestRefunds:
    async def test_full_refund_moves_the_whole_amount(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, 1000)
        key = new_key()

        response = await refund(client, payment["id"], 1000, key)

        assert response.status_code == 201
        refund_object = response.json()
        assert refund_object["id"].startswith("re_")
        assert refund_object["status"] == "succeeded"
        assert refund_object["settled_at"] is not None
        assert refund_object["failure_code"] is None
        after = await get_payment(client, payment["id"])
        assert after["status"] == "refunded"
        assert after["refunded_amount"] == 1000
        assert after["ledger"][-1]["type"] == "refund"
        assert after["ledger"][-1]["idempotency_key"] == key
        assert (await client.get(f"/v1/refunds/{refund_object['id']}")).json() == refund_object

    async def test_partial_refunds_then_over_refund_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        payment = await create_payment(client, 1000)
        assert (await refund(client, payment["id"], 300)).status_code == 201
        assert (await refund(client, payment["id"], 200)).status_code == 201

        over = await refund(client, payment["id"], 501)

        assert (over.status_code, error_code(over)) == (409, "amount_exceeds_refundable")
        after = await get_payment(client, payment["id"])
        assert after["status"] == "partially_refunded"
        assert after["refunded_amount"] == 500
        assert movements(after)[2:] == [("refund", 300), ("refund", 200)]

    async def test_refund_of_uncaptured_payment_is_refused(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, capture=False)

        response = await refund(client, payment["id"], 100)

        assert (response.status_code, error_code(response)) == (409, "payment_not_captured")
        assert movements(await get_payment(client, payment["id"])) == [("authorize", 1000)]

    async def test_declined_refund_moves_nothing(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, refund="decline")

        response = await refund(client, payment["id"], 400)

        assert (response.status_code, error_code(response)) == (402, "refund_declined")
        declined = response.json()["refund"]
        assert (declined["status"], declined["failure_code"]) == ("declined", "card_declined")
        assert declined["settled_at"] is None
        assert (await client.get(f"/v1/refunds/{declined['id']}")).json() == declined
        after = await get_payment(client, payment["id"])
        assert (after["status"], after["refunded_amount"]) == ("captured", 0)
        assert movements(after) == [("authorize", 1000), ("capture", 1000)]

    async def test_pending_refunds_reserve_the_balance(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, 1000, refund="pending", settle_after_seconds=3600)

        pending = await refund(client, payment["id"], 600)
        over = await refund(client, payment["id"], 401)

        assert pending.status_code == 201
        assert (pending.json()["status"], pending.json()["settled_at"]) == ("pending", None)
        assert (over.status_code, error_code(over)) == (409, "amount_exceeds_refundable")
        after = await get_payment(client, payment["id"])
        assert (after["refunded_amount"], after["pending_refund_amount"]) == (0, 600)
        assert after["refundable_amount"] == 400
        assert movements(after) == [("authorize", 1000), ("capture", 1000)]


class TestIdempotency:
    async def test_same_key_and_body_replays_without_a_second_effect(
        self, client: httpx.AsyncClient
    ) -> None:
        payment = await create_payment(client)
        key = new_key()

        first = await refund(client, payment["id"], 250, key)
        # Same body with other spacing and key order still counts as the same request.
        second = await client.post(
            f"/v1/payments/{payment['id']}/refunds",
            content=b'{ "amount" : 250 }',
            headers={"Idempotency-Key": key},
        )

        assert (first.status_code, second.status_code) == (201, 201)
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        after = await get_payment(client, payment["id"])
        assert [e for e in after["ledger"] if e["type"] == "refund"] == [
            {
                "at": first.json()["created_at"],
                "type": "refund",
                "amount": 250,
                "idempotency_key": key,
            }
        ]

    async def test_same_key_with_another_body_is_refused(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)
        key = new_key()
        await refund(client, payment["id"], 100, key)

        reused = await refund(client, payment["id"], 200, key)

        assert (reused.status_code, error_code(reused)) == (409, "idempotency_key_reused")
        assert (await get_payment(client, payment["id"]))["refunded_amount"] == 100

    async def test_keys_are_scoped_per_payment(self, client: httpx.AsyncClient) -> None:
        first, second = await create_payment(client), await create_payment(client)
        key = new_key()

        one = await refund(client, first["id"], 100, key)
        other = await refund(client, second["id"], 100, key)

        assert (one.status_code, other.status_code) == (201, 201)
        assert one.json()["id"] != other.json()["id"]
        assert (await get_payment(client, second["id"]))["refunded_amount"] == 100

    @pytest.mark.parametrize("route", ["refunds", "void", "recapture"])
    async def test_key_is_required_on_payment_mutations(
        self, client: httpx.AsyncClient, route: str
    ) -> None:
        payment = await create_payment(client)

        response = await client.post(f"/v1/payments/{payment['id']}/{route}", json={"amount": 1})

        assert (response.status_code, error_code(response)) == (400, "idempotency_key_required")
        assert movements(await get_payment(client, payment["id"])) == movements(payment)

    async def test_concurrent_duplicates_apply_once(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)
        key = new_key()

        responses = await asyncio.gather(
            *(refund(client, payment["id"], 10, key) for _ in range(20))
        )

        assert {response.status_code for response in responses} == {201}
        assert len({response.json()["id"] for response in responses}) == 1
        after = await get_payment(client, payment["id"])
        assert movements(after).count(("refund", 10)) == 1

    async def test_a_rejection_is_replayed_too(self, client: httpx.AsyncClient) -> None:
        """A keyed answer is final: the retry of a refused refund is refused the same way."""
        payment = await create_payment(client, 100)
        key = new_key()

        first = await refund(client, payment["id"], 101, key)
        second = await refund(client, payment["id"], 101, key)

        assert (first.status_code, error_code(first)) == (409, "amount_exceeds_refundable")
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"


class TestVoid:
    async def test_void_releases_the_authorization(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, 800, capture=False)
        key = new_key()

        response = await post(client, f"/v1/payments/{payment['id']}/void", key=key)
        replay = await client.post(
            f"/v1/payments/{payment['id']}/void", headers={"Idempotency-Key": key}
        )

        assert response.status_code == 200
        voided = response.json()
        assert voided["status"] == "voided"
        assert movements(voided) == [("authorize", 800), ("void", 800)]
        assert voided["ledger"][-1]["idempotency_key"] == key
        assert (replay.status_code, replay.json()) == (200, voided)

    async def test_second_void_and_refund_of_voided_payment_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        payment = await create_payment(client, capture=False)
        await post(client, f"/v1/payments/{payment['id']}/void")

        again = await post(client, f"/v1/payments/{payment['id']}/void")
        refund_response = await refund(client, payment["id"], 100)

        assert (again.status_code, error_code(again)) == (409, "payment_voided")
        assert (refund_response.status_code, error_code(refund_response)) == (409, "payment_voided")
        assert movements(await get_payment(client, payment["id"])) == [
            ("authorize", 1000),
            ("void", 1000),
        ]

    async def test_void_of_captured_payment_is_refused(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)

        response = await post(client, f"/v1/payments/{payment['id']}/void")

        assert (response.status_code, error_code(response)) == (409, "payment_already_captured")
        assert movements(await get_payment(client, payment["id"])) == movements(payment)


class TestRecapture:
    async def test_nothing_to_recapture_is_not_possible(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)

        check = await client.get(f"/v1/payments/{payment['id']}/recapture")

        assert check.json() == {"outcome": "not_possible", "until": None}

    async def test_refunded_money_is_recaptured_within_the_window(
        self, client: httpx.AsyncClient
    ) -> None:
        payment = await create_payment(client, 1000, recapture_window_seconds=600)
        refunded = (await refund(client, payment["id"], 400)).json()
        key = new_key()

        check = (await client.get(f"/v1/payments/{payment['id']}/recapture")).json()
        too_much = await post(client, f"/v1/payments/{payment['id']}/recapture", {"amount": 401})
        response = await post(
            client, f"/v1/payments/{payment['id']}/recapture", {"amount": 400}, key
        )

        assert check["outcome"] == "restorable"
        assert check["until"] > refunded["settled_at"]
        assert (too_much.status_code, error_code(too_much)) == (409, "amount_exceeds_recapturable")
        assert response.status_code == 200
        after = response.json()
        assert movements(after)[2:] == [("refund", 400), ("recapture", 400)]
        assert after["ledger"][-1]["idempotency_key"] == key
        assert (after["status"], after["captured_amount"]) == ("captured", 1400)
        assert (after["refunded_amount"], after["recapturable_amount"]) == (400, 0)
        final_check = await client.get(f"/v1/payments/{payment['id']}/recapture")
        assert final_check.json() == {"outcome": "not_possible", "until": None}

    async def test_voided_payment_is_recaptured(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, 900, capture=False)
        await post(client, f"/v1/payments/{payment['id']}/void")

        check = (await client.get(f"/v1/payments/{payment['id']}/recapture")).json()
        response = await post(client, f"/v1/payments/{payment['id']}/recapture", {"amount": 900})

        assert check["outcome"] == "restorable"
        after = response.json()
        assert (after["status"], after["captured_amount"]) == ("captured", 900)
        assert movements(after) == [("authorize", 900), ("void", 900), ("recapture", 900)]

    @pytest.mark.parametrize("outcome", ["reauth_required", "not_possible"])
    async def test_behavior_can_forbid_recapture(
        self, client: httpx.AsyncClient, outcome: str
    ) -> None:
        payment = await create_payment(client, recapture=outcome)
        await refund(client, payment["id"], 1000)

        check = await client.get(f"/v1/payments/{payment['id']}/recapture")
        response = await post(client, f"/v1/payments/{payment['id']}/recapture", {"amount": 100})

        assert check.json() == {"outcome": outcome, "until": None}
        assert (response.status_code, error_code(response)) == (409, "recapture_unavailable")
        assert movements(await get_payment(client, payment["id"]))[-1] == ("refund", 1000)


class TestFaults:
    async def test_error_rate_answers_503_before_any_effect(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        payment = await create_payment(client)
        key = new_key()
        await faults(error_rate=1)

        response = await refund(client, payment["id"], 100, key)

        assert (response.status_code, error_code(response)) == (503, "service_unavailable")
        assert movements(await get_payment(client, payment["id"])) == movements(payment)
        await faults()
        # No answer was stored either, so the retry performs the refund for the first time.
        retry = await refund(client, payment["id"], 100, key)
        assert retry.status_code == 201
        assert "Idempotent-Replayed" not in retry.headers

    async def test_error_after_effect_applies_once_and_retry_gets_the_result(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        payment = await create_payment(client)
        key = new_key()
        await faults(error_after_effect_rate=1)

        lost = await refund(client, payment["id"], 300, key)
        lost_again = await refund(client, payment["id"], 300, key)
        await faults()
        retry = await refund(client, payment["id"], 300, key)

        assert (lost.status_code, lost_again.status_code) == (503, 503)
        assert retry.status_code == 201
        assert retry.headers["Idempotent-Replayed"] == "true"
        after = await get_payment(client, payment["id"])
        assert movements(after).count(("refund", 300)) == 1
        assert after["ledger"][-1]["idempotency_key"] == key
        assert after["refunded_amount"] == 300

    async def test_hang_answers_503_late_and_without_effect(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        payment = await create_payment(client)
        await faults(hang_rate=1, hang_seconds=0.3)

        started = time.monotonic()
        response = await refund(client, payment["id"], 100)

        assert time.monotonic() - started >= 0.3
        assert response.status_code == 503
        assert movements(await get_payment(client, payment["id"])) == movements(payment)

    async def test_payment_creation_is_faulted_like_every_post(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        """``POST /v1/payments`` too: nothing is created before the effect, and a payment made
        but unanswered comes back (the same one) to a retry with its key."""
        body = {"amount": 1200, "currency": "EUR"}
        key = new_key()
        await faults(error_rate=1)
        refused = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        assert (refused.status_code, error_code(refused)) == (503, "service_unavailable")

        await faults(error_after_effect_rate=1)
        lost = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        lost_again = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        assert (lost.status_code, lost_again.status_code) == (503, 503)

        await faults()
        retry = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 201
        assert retry.headers["Idempotent-Replayed"] == "true"
        again = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        assert again.json()["id"] == retry.json()["id"]
        assert movements(retry.json()) == [("authorize", 1200), ("capture", 1200)]

    async def test_a_hanging_payment_creation_answers_503_without_a_payment(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        key = new_key()
        body = {"amount": 700, "currency": "EUR"}
        await faults(hang_rate=1, hang_seconds=0.3)
        hung = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        assert hung.status_code == 503
        await faults()
        first = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 201
        assert "Idempotent-Replayed" not in first.headers

    async def test_the_fault_config_itself_is_never_faulted(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        await faults(error_rate=1, hang_rate=1, error_after_effect_rate=1, hang_seconds=12)

        config = await client.get("/v1/faults")
        changed = await client.put("/v1/faults", json={"error_rate": 1, "hang_seconds": 11})

        assert config.json() == {
            "error_rate": 1.0,
            "hang_rate": 1.0,
            "error_after_effect_rate": 1.0,
            "slow_rate": 0.0,
            "hang_seconds": 12.0,
        }
        assert changed.status_code == 200
        assert changed.json()["hang_seconds"] == 11.0

    async def test_rates_outside_zero_to_one_are_refused(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        response = await client.put("/v1/faults", json={"error_rate": 1.5})

        assert (response.status_code, error_code(response)) == (422, "validation_error")
        assert (await client.get("/v1/faults")).json()["error_rate"] == 0.0


INVALID_REFUND_BODIES = {
    "float amount": b'{"amount": 10.0}',
    "negative amount": b'{"amount": -5}',
    "zero amount": b'{"amount": 0}',
    "huge amount": b'{"amount": 1000000000000001}',
    "boolean amount": b'{"amount": true}',
    "string amount": b'{"amount": "100"}',
    "missing amount": b"{}",
    "unknown field": b'{"amount": 100, "currency": "EUR"}',
    "not json": b'{"amount": 100',
    "NaN": b'{"amount": NaN}',
    "array": b"[100]",
    "not utf-8": b'{"amount": "\xff"}',
}

INVALID_PAYMENTS = {
    "float amount": {"amount": 99.5, "currency": "EUR"},
    "lowercase currency": {"amount": 100, "currency": "eur"},
    "numeric currency": {"amount": 100, "currency": 978},
    "capture as string": {"amount": 100, "currency": "EUR", "capture": "yes"},
    "unknown refund behavior": {"amount": 100, "currency": "EUR", "behavior": {"refund": "maybe"}},
    "negative settle time": {
        "amount": 100,
        "currency": "EUR",
        "behavior": {"settle_after_seconds": -1},
    },
}


class TestValidation:
    @pytest.mark.parametrize(
        "body", INVALID_REFUND_BODIES.values(), ids=INVALID_REFUND_BODIES.keys()
    )
    async def test_invalid_refund_is_422_and_changes_nothing(
        self, client: httpx.AsyncClient, body: bytes
    ) -> None:
        payment = await create_payment(client)

        response = await client.post(
            f"/v1/payments/{payment['id']}/refunds",
            content=body,
            headers={"Idempotency-Key": new_key(), "Content-Type": "application/json"},
        )

        assert (response.status_code, error_code(response)) == (422, "validation_error")
        assert response.json()["error"]["message"]
        assert movements(await get_payment(client, payment["id"])) == movements(payment)

    @pytest.mark.parametrize("body", INVALID_PAYMENTS.values(), ids=INVALID_PAYMENTS.keys())
    async def test_invalid_payment_is_422(self, client: httpx.AsyncClient, body: Json) -> None:
        response = await client.post("/v1/payments", json=body)

        assert (response.status_code, error_code(response)) == (422, "validation_error")

    async def test_a_422_stores_no_answer_under_the_key(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)
        key = new_key()

        await refund(client, payment["id"], -1, key)
        fixed = await refund(client, payment["id"], 100, key)

        assert fixed.status_code == 201

    async def test_unknown_route_is_a_json_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/nothing")

        assert (response.status_code, error_code(response)) == (404, "not_found")


class TestWebhooks:
    async def test_settled_refund_is_delivered_signed_and_retried(
        self, client: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        """The receiver fails twice; the third attempt carries the same signed event."""
        payment = await create_payment(client, refund="pending", settle_after_seconds=0.2)
        receiver.failures_left = 2
        key = new_key()

        pending = (await refund(client, payment["id"], 500, key)).json()
        deliveries = await receiver.wait_for(pending["id"])

        assert [d.answered for d in deliveries] == [500, 500, 200]
        assert len({d.body for d in deliveries}) == 1
        for delivery in deliveries:
            assert_signed_now(delivery)
        event = deliveries[-1].event
        assert event["id"].startswith("evt_")
        assert event["type"] == "refund.succeeded"
        settled = (await client.get(f"/v1/refunds/{pending['id']}")).json()
        assert event["refund"] == settled
        assert (settled["status"], settled["amount"]) == ("succeeded", 500)
        after = await get_payment(client, payment["id"])
        assert after["ledger"][-1] == {
            "at": settled["settled_at"],
            "type": "refund",
            "amount": 500,
            "idempotency_key": key,
        }
        assert (after["refunded_amount"], after["pending_refund_amount"]) == (500, 0)


class TestDurability:
    async def test_restart_keeps_payments_keys_and_faults(self, tmp_path: Path) -> None:
        db_path = tmp_path / "durable.sqlite3"
        key = new_key()
        async with running_sandbox(db_path) as first:
            async with httpx.AsyncClient(base_url=first.url, trust_env=False) as http:
                payment = await create_payment(
                    http, 1000, refund="pending", settle_after_seconds=3600
                )
                pending = (await refund(http, payment["id"], 300, key)).json()
                await http.put("/v1/faults", json={"hang_seconds": 7})
                before = await get_payment(http, payment["id"])
            assert await stop(first.process) == 0

        async with (
            running_sandbox(db_path) as second,
            httpx.AsyncClient(base_url=second.url, trust_env=False) as http,
        ):
            assert await get_payment(http, payment["id"]) == before
            assert (await http.get(f"/v1/refunds/{pending['id']}")).json() == pending
            replay = await refund(http, payment["id"], 300, key)
            assert replay.json() == pending
            assert replay.headers["Idempotent-Replayed"] == "true"
            assert (await http.get("/v1/faults")).json()["hang_seconds"] == 7.0
            assert (await get_payment(http, payment["id"]))["pending_refund_amount"] == 300

    async def test_restart_redelivers_undelivered_webhooks(
        self, tmp_path: Path, receiver: WebhookReceiver
    ) -> None:
        db_path = tmp_path / "outbox.sqlite3"
        receiver.failures_left = 1000
        async with running_sandbox(db_path, webhook_url=receiver.url) as first:
            async with httpx.AsyncClient(base_url=first.url, trust_env=False) as http:
                payment = await create_payment(http, refund="pending", settle_after_seconds=0)
                pending = (await refund(http, payment["id"], 100)).json()
            await receiver.wait_for(pending["id"], answered=500)
        receiver.failures_left = 0

        async with running_sandbox(db_path, webhook_url=receiver.url):
            deliveries = await receiver.wait_for(pending["id"])

        assert len({d.event["id"] for d in deliveries}) == 1
        assert deliveries[-1].answered == 200


# -- accounts ---------------------------------------------------------------------------


class TestAccounts:
    """Each merchant account sees only its own payments (the `Provider-Account` header)."""

    async def test_a_payment_of_another_account_is_not_found_there(self, client):
        mine = {"Provider-Account": "acct_mine"}
        theirs = {"Provider-Account": "acct_theirs"}
        created = await client.post(
            "/v1/payments", json={"amount": 700, "currency": "EUR"}, headers=mine
        )
        assert created.status_code == 201
        payment_id = created.json()["id"]
        assert (await client.get(f"/v1/payments/{payment_id}", headers=mine)).status_code == 200
        for headers in (theirs, {}):
            assert (
                await client.get(f"/v1/payments/{payment_id}", headers=headers)
            ).status_code == (404)
            stolen = await client.post(
                f"/v1/payments/{payment_id}/refunds",
                json={"amount": 700},
                headers=headers | {"Idempotency-Key": new_key()},
            )
            assert stolen.status_code == 404
            assert error_code(stolen) == "payment_not_found"
            recapture = await client.get(f"/v1/payments/{payment_id}/recapture", headers=headers)
            assert recapture.status_code == 404
        payment = (await client.get(f"/v1/payments/{payment_id}", headers=mine)).json()
        assert movements(payment) == [("authorize", 700), ("capture", 700)]

    async def test_a_refund_of_another_account_is_not_found_there(self, client):
        mine = {"Provider-Account": "acct_refunds"}
        created = await client.post(
            "/v1/payments", json={"amount": 300, "currency": "EUR"}, headers=mine
        )
        payment_id = created.json()["id"]
        refunded = await client.post(
            f"/v1/payments/{payment_id}/refunds",
            json={"amount": 100},
            headers=mine | {"Idempotency-Key": new_key()},
        )
        refund_id = refunded.json()["id"]
        assert (await client.get(f"/v1/refunds/{refund_id}", headers=mine)).status_code == 200
        assert (await client.get(f"/v1/refunds/{refund_id}")).status_code == 404

    async def test_idempotency_keys_are_kept_per_account(self, client):
        key = new_key()
        first = await client.post(
            "/v1/payments",
            json={"amount": 100, "currency": "EUR"},
            headers={"Provider-Account": "acct_one", "Idempotency-Key": key},
        )
        second = await client.post(
            "/v1/payments",
            json={"amount": 100, "currency": "EUR"},
            headers={"Provider-Account": "acct_two", "Idempotency-Key": key},
        )
        assert first.status_code == second.status_code == 201
        assert first.json()["id"] != second.json()["id"]

    @pytest.mark.parametrize("account", ["a b", "a/b", "", "x" * 65, "acct~1"])
    async def test_an_account_that_is_not_an_id_is_refused(self, client, account):
        answer = await client.get("/v1/payments/pay_x", headers={"Provider-Account": account})
        assert answer.status_code == 400
        assert error_code(answer) == "validation_error"

    async def test_webhooks_name_the_account_of_the_payment(self, client, receiver):
        headers = {"Provider-Account": "acct_hooks"}
        created = await client.post(
            "/v1/payments",
            json={
                "amount": 500,
                "currency": "EUR",
                "behavior": {"refund": "pending", "settle_after_seconds": 0},
            },
            headers=headers,
        )
        refunded = await client.post(
            f"/v1/payments/{created.json()['id']}/refunds",
            json={"amount": 500},
            headers=headers | {"Idempotency-Key": new_key()},
        )
        deliveries = await receiver.wait_for(refunded.json()["id"])
        assert deliveries[-1].event["account"] == "acct_hooks"


# -- a real provider's rules -----------------------------------------------------------

DAY = 86400


async def advance_clock(client: httpx.AsyncClient, seconds: float) -> Json:
    """Move the sandbox's provider clock forward."""
    response = await client.post("/v1/clock/advance", json={"seconds": seconds})
    assert response.status_code == 200, response.text
    clock: Json = response.json()
    return clock


async def get_refund(client: httpx.AsyncClient, refund_id: str) -> Json:
    response = await client.get(f"/v1/refunds/{refund_id}")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


@contextlib.asynccontextmanager
async def own_sandbox(
    tmp_path: Path,
    *,
    webhook_url: str | None = None,
    flags: Sequence[str] = (),
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """A sandbox of the test's own (its clock can be moved without disturbing others)."""
    async with (
        running_sandbox(
            tmp_path / "own.sqlite3", webhook_url=webhook_url, flags=flags, settings=settings
        ) as process,
        httpx.AsyncClient(base_url=process.url, timeout=10.0, trust_env=False) as http,
    ):
        yield http


class TestIdempotencyKeyRetention:
    """Keys are kept 24 hours of provider time, as Stripe keeps them; then they are new."""

    async def test_a_key_older_than_a_day_is_a_new_request(self, tmp_path: Path) -> None:
        """The retry of a day-old key refunds a second time: the hazard the product must avoid."""
        async with own_sandbox(tmp_path) as client:
            payment = await create_payment(client, 1000)
            key = new_key()
            first = await refund(client, payment["id"], 300, key)

            await advance_clock(client, DAY - 1)
            within = await refund(client, payment["id"], 300, key)
            await advance_clock(client, 2)
            after = await refund(client, payment["id"], 300, key)

            assert (first.status_code, within.status_code, after.status_code) == (201, 201, 201)
            assert within.json() == first.json()
            assert within.headers["Idempotent-Replayed"] == "true"
            assert after.json()["id"] != first.json()["id"]
            assert "Idempotent-Replayed" not in after.headers
            ledger = (await get_payment(client, payment["id"]))["ledger"]
            refunds = [(e["type"], e["amount"], e["idempotency_key"]) for e in ledger[2:]]
            assert refunds == [("refund", 300, key), ("refund", 300, key)]

    async def test_retention_and_clock_speed_are_configurable(self, tmp_path: Path) -> None:
        """A minute of retention on a clock 100 times as fast: the key is new within a second."""
        settings = {
            "PAYMENT_PROVIDER_IDEMPOTENCY_RETENTION_SECONDS": "60",
            "PAYMENT_PROVIDER_CLOCK_SPEED": "100",
        }
        async with own_sandbox(tmp_path, settings=settings) as client:
            clock = (await client.get("/v1/clock")).json()
            payment = await create_payment(client, 1000)
            key = new_key()
            first = await refund(client, payment["id"], 100, key)
            replay = await refund(client, payment["id"], 100, key)
            await asyncio.sleep(0.8)
            again = await refund(client, payment["id"], 100, key)

            assert clock["speed"] == 100.0
            assert replay.json() == first.json()
            assert again.json()["id"] != first.json()["id"]
            assert (await get_payment(client, payment["id"]))["refunded_amount"] == 200

    async def test_provider_time_survives_a_restart(self, tmp_path: Path) -> None:
        db_path = tmp_path / "clock.sqlite3"
        async with running_sandbox(db_path) as first:
            async with httpx.AsyncClient(base_url=first.url, trust_env=False) as http:
                moved = await advance_clock(http, 3 * DAY)
            assert await stop(first.process) == 0

        async with (
            running_sandbox(db_path) as second,
            httpx.AsyncClient(base_url=second.url, trust_env=False) as http,
        ):
            after = (await http.get("/v1/clock")).json()

        assert after["now"] >= moved["now"]


async def _retried_while_held(
    client: httpx.AsyncClient, faults: SetFaults, **fault: float
) -> tuple[str, str, asyncio.Task[httpx.Response], httpx.Response]:
    """With ``fault`` set, refund 100 of a new payment under a new key and send the same
    request again while the first is held: the payment id, the key, the first request still
    under way, and the retry's answer."""
    payment = await create_payment(client)
    key = new_key()
    await faults(**fault)
    first = asyncio.create_task(refund(client, payment["id"], 100, key))
    await asyncio.sleep(0.3)
    return payment["id"], key, first, await refund(client, payment["id"], 100, key)


class TestIdempotencyKeyInUse:
    async def test_a_key_still_being_processed_answers_409_in_use(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        """While the first request hangs, its retry is refused with `409` and stores nothing."""
        payment_id, key, first, second = await _retried_while_held(
            client, faults, hang_rate=1, hang_seconds=1.0
        )
        hung = await first
        await faults()
        third = await refund(client, payment_id, 100, key)

        assert (second.status_code, error_code(second)) == (409, "idempotency_key_in_use")
        assert hung.status_code == 503
        assert third.status_code == 201
        assert "Idempotent-Replayed" not in third.headers
        assert movements(await get_payment(client, payment_id)).count(("refund", 100)) == 1

    async def test_a_slow_first_request_pays_once_and_its_retry_replays_it(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        """The client gives up on a slow refund and retries: `409`, then the first answer."""
        payment_id, key, first, in_use = await _retried_while_held(
            client, faults, slow_rate=1, hang_seconds=1.0
        )
        await faults()
        applied = await first
        retry = await refund(client, payment_id, 100, key)

        assert (in_use.status_code, error_code(in_use)) == (409, "idempotency_key_in_use")
        assert applied.status_code == 201
        assert (retry.status_code, retry.json()) == (201, applied.json())
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert movements(await get_payment(client, payment_id)).count(("refund", 100)) == 1

    async def test_another_key_is_not_held_up(
        self, client: httpx.AsyncClient, faults: SetFaults
    ) -> None:
        payment = await create_payment(client)
        await faults(hang_rate=1, hang_seconds=0.6)
        first = asyncio.create_task(refund(client, payment["id"], 100, new_key()))
        await asyncio.sleep(0.2)
        await faults()

        other = await refund(client, payment["id"], 100, new_key())

        assert other.status_code == 201
        assert (await first).status_code == 503


class TestRefundBehaviours:
    async def test_fail_after_success_gives_the_money_back_to_the_merchant(
        self, client: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        """The refund succeeds, then fails: a `refund_reversal` and a signed `refund.failed`."""
        payment = await create_payment(
            client, 1000, refund="fail_after_success", fail_after_seconds=0.3
        )
        key = new_key()

        created = await client.post(
            f"/v1/payments/{payment['id']}/refunds",
            json={"amount": 400, "metadata": {"refund_id": "c1-r1"}},
            headers={"Idempotency-Key": key},
        )
        right_after = await get_payment(client, payment["id"])
        deliveries = await receiver.wait_for(created.json()["id"])

        assert (created.status_code, created.json()["status"]) == (201, "succeeded")
        assert (right_after["status"], right_after["refunded_amount"]) == (
            "partially_refunded",
            400,
        )
        failed = await get_refund(client, created.json()["id"])
        assert (failed["status"], failed["failure_code"]) == ("failed", "expired_or_canceled_card")
        assert failed["metadata"] == {"refund_id": "c1-r1"}
        event = deliveries[-1].event
        assert_signed_now(deliveries[-1])
        assert (event["type"], event["refund"]) == ("refund.failed", failed)
        assert event["id"].startswith("evt_")
        after = await get_payment(client, payment["id"])
        assert movements(after) == [
            ("authorize", 1000),
            ("capture", 1000),
            ("refund", 400),
            ("refund_reversal", 400),
        ]
        assert after["ledger"][-1]["idempotency_key"] == key
        assert (after["status"], after["refunded_amount"], after["refundable_amount"]) == (
            "captured",
            0,
            1000,
        )
        # The key still answers what it answered: the refund as it was created.
        replay = await client.post(
            f"/v1/payments/{payment['id']}/refunds",
            json={"amount": 400, "metadata": {"refund_id": "c1-r1"}},
            headers={"Idempotency-Key": key},
        )
        assert replay.json() == created.json()

    async def test_fail_after_success_waits_its_delay(self, tmp_path: Path) -> None:
        async with own_sandbox(tmp_path) as client:
            payment = await create_payment(client, refund="fail_after_success")
            created = (await refund(client, payment["id"], 1000)).json()

            await advance_clock(client, 4.9)
            still = await get_refund(client, created["id"])
            await advance_clock(client, 0.2)
            failed = await get_refund(client, created["id"])

            assert (still["status"], failed["status"]) == ("succeeded", "failed")
            assert (await get_payment(client, payment["id"]))["refunded_amount"] == 0

    async def test_a_refund_can_stay_pending_for_days(self, tmp_path: Path) -> None:
        async with own_sandbox(tmp_path) as client:
            payment = await create_payment(client, refund="pending", settle_after_seconds=3 * DAY)
            created = (await refund(client, payment["id"], 600)).json()

            await advance_clock(client, 2 * DAY)
            two_days = await get_refund(client, created["id"])
            listed = (await client.get(f"/v1/payments/{payment['id']}/refunds")).json()
            waiting = await get_payment(client, payment["id"])
            await advance_clock(client, DAY)
            settled = await get_refund(client, created["id"])

            assert two_days["status"] == "pending"
            assert [r["status"] for r in listed["data"]] == ["pending"]
            assert (waiting["pending_refund_amount"], waiting["refunded_amount"]) == (600, 0)
            assert settled["status"] == "succeeded"
            assert (await get_payment(client, payment["id"]))["refunded_amount"] == 600

    async def test_a_pending_refund_that_fails_moves_nothing(
        self, client: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        payment = await create_payment(client, refund="pending_then_fail", settle_after_seconds=0.2)

        created = (await refund(client, payment["id"], 700)).json()
        deliveries = await receiver.wait_for(created["id"])

        assert created["status"] == "pending"
        event = deliveries[-1].event
        assert (event["type"], event["refund"]["status"]) == ("refund.failed", "failed")
        assert event["refund"]["failure_code"] == "card_declined"
        after = await get_payment(client, payment["id"])
        assert movements(after) == movements(payment)
        assert (after["pending_refund_amount"], after["refundable_amount"]) == (0, 1000)


class TestRefundMetadataAndListing:
    async def test_metadata_is_kept_and_refunds_are_listed_newest_first(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = {"Provider-Account": "acct_listing"}
        created = await client.post(
            "/v1/payments", json={"amount": 1000, "currency": "EUR"}, headers=headers
        )
        payment_id = created.json()["id"]
        answers = []
        for n in (1, 2, 3):
            answer = await client.post(
                f"/v1/payments/{payment_id}/refunds",
                json={"amount": 100, "metadata": {"refund_id": f"c1-r{n}", "note": ""}},
                headers=headers | {"Idempotency-Key": new_key()},
            )
            assert answer.status_code == 201, answer.text
            answers.append(answer.json())
        plain = await refund(client, "pay_missing", 1)  # another payment's noise: 404

        listed = await client.get(f"/v1/payments/{payment_id}/refunds", headers=headers)
        elsewhere = await client.get(f"/v1/payments/{payment_id}/refunds")

        assert plain.status_code == 404
        assert answers[0]["metadata"] == {"refund_id": "c1-r1", "note": ""}
        assert listed.status_code == 200
        assert listed.json() == {"data": answers[::-1]}
        for item in listed.json()["data"]:
            assert {"id", "amount", "status", "metadata", "created_at", "failure_code"} <= set(item)
        assert (elsewhere.status_code, error_code(elsewhere)) == (404, "payment_not_found")

    async def test_a_refund_without_metadata_has_an_empty_one(
        self, client: httpx.AsyncClient
    ) -> None:
        payment = await create_payment(client)

        created = (await refund(client, payment["id"], 100)).json()

        assert created["metadata"] == {}
        listed = (await client.get(f"/v1/payments/{payment['id']}/refunds")).json()
        assert listed == {"data": [created]}

    async def test_same_key_with_other_metadata_is_refused(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client)
        key = new_key()
        path = f"/v1/payments/{payment['id']}/refunds"
        first = await client.post(
            path, json={"amount": 100, "metadata": {"a": "1"}}, headers={"Idempotency-Key": key}
        )

        other = await client.post(
            path, json={"amount": 100, "metadata": {"a": "2"}}, headers={"Idempotency-Key": key}
        )

        assert first.status_code == 201
        assert (other.status_code, error_code(other)) == (409, "idempotency_key_reused")

    @pytest.mark.parametrize(
        "metadata",
        [
            {f"k{n}": "v" for n in range(21)},
            {"k": 1},
            {"k": None},
            {"": "v"},
            {"k" * 41: "v"},
            {"k": "v" * 501},
            ["k", "v"],
        ],
        ids=["21 keys", "number", "null", "empty key", "long key", "long value", "list"],
    )
    async def test_invalid_metadata_is_422(self, client: httpx.AsyncClient, metadata: Any) -> None:
        payment = await create_payment(client)

        response = await post(
            client, f"/v1/payments/{payment['id']}/refunds", {"amount": 1, "metadata": metadata}
        )

        assert (response.status_code, error_code(response)) == (422, "validation_error")
        assert (await client.get(f"/v1/payments/{payment['id']}/refunds")).json() == {"data": []}


class TestWebhookRedelivery:
    async def test_webhooks_come_late_twice_and_out_of_order(
        self, tmp_path: Path, receiver: WebhookReceiver
    ) -> None:
        """Every event twice, each delivery at least 0.5 s late and shuffled within 1.5 s."""
        flags = [
            "--webhook-delay-seconds",
            "0.5",
            "--webhook-duplicate-rate",
            "1",
            "--webhook-shuffle-seconds",
            "1.5",
        ]
        async with own_sandbox(tmp_path, webhook_url=receiver.url, flags=flags) as client:
            refund_ids = []
            for _ in range(8):
                payment = await create_payment(client, refund="pending", settle_after_seconds=0)
                created = time.monotonic()
                refund_ids.append((await refund(client, payment["id"], 100)).json()["id"])
            deliveries = await receiver.wait_for_all(set(refund_ids), 16)

        by_refund: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_refund.setdefault(delivery.event["refund"]["id"], []).append(delivery)
        assert {refund_id: len(each) for refund_id, each in by_refund.items()} == dict.fromkeys(
            refund_ids, 2
        )
        for each in by_refund.values():
            first, second = each
            assert first.body == second.body  # the same event: same id, same bytes
            assert_signed_now(first)
            assert_signed_now(second)
        # The last refund settled at `created`; none of its deliveries came sooner than 0.5 s.
        assert min(d.at for d in by_refund[refund_ids[-1]]) >= created + 0.5
        arrival = list(dict.fromkeys(d.event["refund"]["id"] for d in deliveries))
        assert arrival != refund_ids, "8 events shuffled within 1.5 s arrived in order"
