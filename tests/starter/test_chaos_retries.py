"""The chaos driver's retry reasons say which server answered an outage."""

import httpx
import pytest

from tools.chaos_driver import ResilientHttp


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
