"""The provider client against a fake provider (``httpx.MockTransport``): bodies, paths, errors."""

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from activities.provider_client import (
    PaymentProviderClient,
    ProviderRefused,
    ProviderUnavailable,
    RefundDeclined,
)

Handler = Callable[[httpx.Request], httpx.Response]

REFUND = {"id": "re_1", "payment_id": "pay/1", "amount": 500, "status": "succeeded"}


class Recorder:
    """A fake provider that answers every request the same way and remembers them."""

    def __init__(self, status: int = 200, body: Any = None) -> None:
        self.status = status
        self.body = body if body is not None else {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)

    def client(self) -> PaymentProviderClient:
        transport = httpx.MockTransport(self)
        http = httpx.AsyncClient(transport=transport, base_url="http://provider")
        return PaymentProviderClient("http://provider", http=http)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": "no"}}


class TestRefund:
    async def test_metadata_is_sent_when_given(self) -> None:
        provider = Recorder(201, REFUND)

        answer = await provider.client().refund(
            "pay/1", 500, "key-1", account="acct_a", metadata={"refund_id": "c~1-r1"}
        )

        assert answer == REFUND
        request = provider.last
        assert (request.method, request.url.raw_path) == ("POST", b"/v1/payments/pay%2F1/refunds")
        assert json.loads(request.content) == {"amount": 500, "metadata": {"refund_id": "c~1-r1"}}
        assert request.headers["Idempotency-Key"] == "key-1"
        assert request.headers["Provider-Account"] == "acct_a"

    async def test_without_metadata_the_body_is_what_it_always_was(self) -> None:
        """A retry of an attempt scheduled before metadata existed sends the same body."""
        provider = Recorder(201, REFUND)

        await provider.client().refund("pay_1", 500, "key-1")

        assert json.loads(provider.last.content) == {"amount": 500}
        assert "Provider-Account" not in provider.last.headers

    async def test_a_key_in_use_is_unavailable_not_refused(self) -> None:
        """`409 idempotency_key_in_use`: the first request still runs there; try again later."""
        provider = Recorder(409, error("idempotency_key_in_use"))

        with pytest.raises(ProviderUnavailable) as raised:
            await provider.client().refund("pay_1", 500, "key-1")

        assert (raised.value.code, raised.value.status) == ("idempotency_key_in_use", 409)
        assert not isinstance(raised.value, ProviderRefused)

    @pytest.mark.parametrize(
        ("status", "code", "kind"),
        [
            (409, "idempotency_key_reused", ProviderRefused),
            (409, "amount_exceeds_refundable", ProviderRefused),
            (402, "refund_declined", RefundDeclined),
            (404, "payment_not_found", ProviderRefused),
            (503, "service_unavailable", ProviderUnavailable),
        ],
        ids=["key reused", "over-refund", "declined", "not found", "503"],
    )
    async def test_other_errors_keep_their_meaning(
        self, status: int, code: str, kind: type[Exception]
    ) -> None:
        provider = Recorder(status, error(code))

        with pytest.raises(kind) as raised:
            await provider.client().refund("pay_1", 500, "key-1")

        assert isinstance(raised.value, ProviderUnavailable) == (status >= 500)


class TestListRefunds:
    async def test_lists_a_payments_refunds_in_the_account(self) -> None:
        listed = [REFUND | {"metadata": {"refund_id": "r2"}}, REFUND | {"id": "re_0"}]
        provider = Recorder(200, {"data": listed})

        answer = await provider.client().list_refunds("pay/../x", account="acct_b")

        assert answer == listed
        request = provider.last
        assert (request.method, request.url.raw_path) == (
            "GET",
            b"/v1/payments/pay%2F..%2Fx/refunds",
        )
        assert request.headers["Provider-Account"] == "acct_b"
        assert "Idempotency-Key" not in request.headers

    async def test_an_unknown_payment_is_refused(self) -> None:
        provider = Recorder(404, error("payment_not_found"))

        with pytest.raises(ProviderRefused) as raised:
            await provider.client().list_refunds("pay_1")

        assert raised.value.code == "payment_not_found"

    @pytest.mark.parametrize(
        "body", [{}, {"data": None}, {"data": ["re_1"]}, []], ids=["no data", "null", "ids", "list"]
    )
    async def test_an_unreadable_list_is_unavailable(self, body: Any) -> None:
        provider = Recorder(200, body)

        with pytest.raises(ProviderUnavailable):
            await provider.client().list_refunds("pay_1")
