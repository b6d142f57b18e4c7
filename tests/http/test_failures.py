"""When Temporal or the database is away, or a request is nonsense: a clear answer, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import stock_writes_failing_with
from tests.http.conftest import bearer_client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ACCEPT = {"reason_code": "changed_mind", "reason": "asked", "refund_method": "original"}


@pytest.fixture
def env_token(hook_stack) -> tuple[str, str]:
    """The ``ADMIN_HOOK_TOKENS`` pair every hook of these tests knows: (token, shop)."""
    [(token, shop_id)] = hook_stack.settings.admin_hook_tokens.items()
    return token, shop_id


async def test_health_says_ok_when_temporal_and_the_database_answer(anonymous):
    answer = await anonymous.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "temporal": "ok", "database": "ok"}


async def test_without_temporal_actions_are_temporal_unavailable_and_change_nothing(
    hook_stack, dead_temporal_hook, env_token
):
    token, shop_id = env_token
    async with (
        bearer_client(hook_stack.url, token, timeout=30) as live,
        bearer_client(dead_temporal_hook, token, timeout=30) as dead,
    ):
        base = f"/v1/shops/{shop_id}/orders"
        order = {
            "customer_id": "c",
            "currency": "KRW",
            "items": [{"item_id": "i1", "sku": "s", "quantity": 1, "unit_price": 1000}],
            "tenders": [{"tender_id": "t1", "kind": "points", "amount": 1000}],
        }
        for order_id in ("no-temporal-1", "no-temporal-2"):
            assert (await live.put(f"{base}/{order_id}", json=order)).status_code == 201
        request = {"initiated_by": "customer", "channel": "my_account"}
        started = await live.post(f"{base}/no-temporal-1/cancellation", json=request)
        assert started.status_code == 201

        accept = await dead.post(f"{base}/no-temporal-1/cancellation/accept", json=ACCEPT)
        assert accept.status_code == 503, accept.text
        assert accept.json()["error"]["code"] == "temporal_unavailable"
        assert accept.headers["Retry-After"]
        start = await dead.post(f"{base}/no-temporal-2/cancellation", json=request)
        assert start.status_code == 503
        assert start.json()["error"]["code"] == "temporal_unavailable"
        # Reads fall back to the database projection.
        read = await dead.get(f"{base}/no-temporal-1/cancellation")
        assert read.status_code == 200
        assert read.json()["status"] == "requested"
        health = await dead.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {
            "status": "unavailable",
            "temporal": "unavailable",
            "database": "ok",
        }

        assert (await live.get(f"{base}/no-temporal-1/cancellation")).json()[
            "status"
        ] == "requested"
        assert (await live.get(f"{base}/no-temporal-2/cancellation")).status_code == 404


async def test_without_the_database_every_call_is_database_unavailable(
    dead_database_hook, env_token
):
    token, shop_id = env_token
    async with bearer_client(dead_database_hook, token, timeout=30) as dead:
        for method, path, body in [
            ("GET", f"/v1/shops/{shop_id}/orders/o1", None),
            ("POST", f"/v1/shops/{shop_id}/orders/o1/cancellation/accept", ACCEPT),
            ("GET", f"/v1/shops/{shop_id}/cancellations", None),
            ("PUT", f"/v1/shops/{shop_id}/stock/s1", {"available": 1}),
        ]:
            answer = await dead.request(method, path, json=body, headers={"Idempotency-Key": "k"})
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "database_unavailable"
        health = await dead.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {
            "status": "unavailable",
            "temporal": "ok",
            "database": "unavailable",
        }
    # A token that only the database knows can't be checked either: 503, not 401.
    async with bearer_client(dead_database_hook, "a-database-token", timeout=30) as stranger:
        answer = await stranger.get(f"/v1/shops/{shop_id}/settings")
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "database_unavailable"


# Every SQLSTATE class that means "the database can't serve now", with a member of each;
# asyncpg raises its class for the state (DiskFullError for 53100, and so on).
OUTAGE_STATES = {
    "disk_full": "53100",
    "insufficient_resources": "53000",
    "out_of_memory": "53200",
    "too_many_connections": "53300",
    "configuration_limit_exceeded": "53400",
    "operator_intervention": "57000",
    "query_canceled": "57014",
    "admin_shutdown": "57P01",
    "crash_shutdown": "57P02",
    "cannot_connect_now": "57P03",
    "database_dropped": "57P04",
    "system_error": "58000",
    "io_error": "58030",
    "connection_failure": "08006",
    "read_only_sql_transaction": "25006",
}


@pytest.mark.parametrize("sqlstate", OUTAGE_STATES.values(), ids=OUTAGE_STATES.keys())
async def test_every_database_outage_is_database_unavailable(pool, shop, sqlstate):
    """A full disk, exhausted resources, a shutdown, an I/O error or a read-only standby is
    ``503 database_unavailable``, never a 500; once it is over, the same call works."""
    path = f"{shop.base}/stock/sku-1"
    async with stock_writes_failing_with(pool, shop.shop_id, sqlstate):
        answer = await shop.http.put(path, json={"available": 3})
    assert answer.status_code == 503, answer.text
    assert answer.json() == {
        "error": {
            "code": "database_unavailable",
            "message": "the store database can't serve requests right now; try again soon",
        }
    }
    assert answer.headers["Retry-After"]
    assert (await shop.http.put(path, json={"available": 3})).status_code == 200


async def test_unknown_routes_and_methods_answer_json(shop, anonymous):
    missing = await anonymous.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    method = await shop.http.delete(f"{shop.base}/settings")
    assert method.status_code == 405
    assert method.json()["error"]["code"] == "method_not_allowed"


async def test_a_body_over_the_limit_is_refused_before_it_is_read(shop):
    big = b'{"reason": "' + b"x" * (300 * 1024) + b'"}'
    path = shop.cancellation_path("o1", "/reject")
    declared = await shop.http.post(path, content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 422
    assert "larger than" in declared.json()["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = await shop.http.post(
        path, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 422
    assert streamed.json()["error"]["code"] == "validation_error"
