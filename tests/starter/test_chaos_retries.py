"""The chaos driver's own bookkeeping: which server an outage came from, and when the run
has learned a reversal."""

import httpx
import pytest

from tools.chaos_driver import ResilientHttp, _reversals


@pytest.mark.asyncio
async def test_a_plain_500_from_the_sandbox_is_counted_apart_from_the_hooks() -> None:
    answers = {"/v1/payments": [500, 201], "/v1/shops/s/orders/o": [500, 503, 200]}

    def serve(request: httpx.Request) -> httpx.Response:
        status = answers[request.url.path].pop(0)
        if status == 503:
            return httpx.Response(503, json={"error": {"code": "database_unavailable"}})
        return httpx.Response(status, text="Internal Server Error" if status == 500 else "{}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as client:
        http = ResilientHttp(client)
        paid = await http.request("POST", "http://sandbox/v1/payments", json={})
        order = await http.request("GET", "http://hook/v1/shops/s/orders/o")

    assert (paid.status_code, order.status_code) == (201, 200)
    assert dict(http.retries) == {
        "sandbox 500 error": 1,
        "500 error": 1,
        "503 database_unavailable": 1,
    }


def test_a_refund_found_reversed_by_the_runs_own_call_counts_as_a_reversal() -> None:
    """The driver's card_refund_reversed shape waits for the run to learn each reversal,
    whichever way it learned it (found by the long run: a retried refund call that found
    its refund reversed already flags ``refund_failed``, not ``refund_reversed``)."""

    def entry(event: str, failure: str = "") -> dict[str, object]:
        return {"event": event, "detail": {"refund_id": "c-r1", "failure": failure}}

    view = {
        "history": [
            entry("refund_reversed"),
            entry(
                "refund_failed",
                "refund_failed: the provider reports refund re_1 failed after it was made",
            ),
            entry("refund_failed", "refund_declined: card_declined"),
        ]
    }

    assert _reversals(view) == 2
