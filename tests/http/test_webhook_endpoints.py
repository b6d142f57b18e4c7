"""The webhook endpoint routes: registration, the secret shown once, rotation, deliveries,
and URL validation (``422`` for what a shop may not register)."""

from __future__ import annotations

import logging

import pytest

from tests.http.conftest import bearer_client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PUBLIC = "https://erp.example.com/hooks/cancellations"


async def test_the_first_put_answers_the_secret_once_and_later_ones_keep_it(shop):
    path = f"{shop.base}/webhooks/erp"
    created = await shop.http.put(path, json={"url": PUBLIC})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["cancellation.*"]

    updated = await shop.http.put(
        path, json={"url": PUBLIC + "/v2", "events": ["cancellation.completed"]}
    )
    assert updated.status_code == 200
    assert updated.json()["secret"] is None
    shown = (await shop.http.get(path)).json()
    assert shown["url"] == PUBLIC + "/v2"
    assert shown["events"] == ["cancellation.completed"]
    assert shown["secret"] is None and body["secret"] not in str(shown)
    assert shown["secret_created_at"] == body["secret_created_at"], "an update keeps the secret"
    listed = (await shop.http.get(f"{shop.base}/webhooks")).json()["items"]
    assert [e["endpoint_id"] for e in listed] == ["erp"]


async def test_rotation_answers_a_new_secret_and_keeps_the_old_one_for_a_while(shop, pool):
    path = f"{shop.base}/webhooks/erp"
    first = (await shop.http.put(path, json={"url": PUBLIC})).json()["secret"]
    rotated = await shop.http.post(
        f"{path}/rotate-secret", json={"previous_secret_valid_for": "PT1H"}
    )
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["secret"]
    assert second.startswith("whsec_") and second != first
    assert rotated.json()["previous_secret_expires_at"] is not None
    stored = await pool.fetchrow(
        "SELECT secret, previous_secret FROM webhook_endpoints WHERE shop_id=$1", shop.shop_id
    )
    assert (stored["secret"], stored["previous_secret"]) == (second, first)

    # A rotation during a rotation: only the last two are kept, and PT0S ends the old now.
    third = (
        await shop.http.post(f"{path}/rotate-secret", json={"previous_secret_valid_for": "PT0S"})
    ).json()
    assert third["previous_secret_expires_at"] is None
    stored = await pool.fetchrow(
        "SELECT secret, previous_secret FROM webhook_endpoints WHERE shop_id=$1", shop.shop_id
    )
    assert (stored["secret"], stored["previous_secret"]) == (third["secret"], second)
    too_long = await shop.http.post(
        f"{path}/rotate-secret", json={"previous_secret_valid_for": "P30D"}
    )
    assert too_long.status_code == 422


async def test_delete_removes_the_endpoint_and_unknown_ones_are_webhook_not_found(shop):
    path = f"{shop.base}/webhooks/erp"
    await shop.http.put(path, json={"url": PUBLIC})
    assert (await shop.http.delete(path)).status_code == 204
    for answer in (
        await shop.http.get(path),
        await shop.http.delete(path),
        await shop.http.post(f"{path}/rotate-secret"),
        await shop.http.get(f"{path}/deliveries"),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "webhook_not_found"


async def test_an_unknown_delivery_is_delivery_not_found(shop):
    path = f"{shop.base}/webhooks/erp"
    await shop.http.put(path, json={"url": PUBLIC})
    answer = await shop.http.post(f"{path}/deliveries/dlv_{'a' * 32}/redeliver")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "delivery_not_found"
    malformed = await shop.http.post(f"{path}/deliveries/not-a-delivery/redeliver")
    assert malformed.status_code == 422


@pytest.mark.parametrize(
    "events",
    [[], ["order.created"], ["cancellation.nope"], ["cancellation"], ["x"] * 21, [1]],
    ids=["none", "other-family", "unknown-type", "no-dot", "too-many", "not-text"],
)
async def test_a_bad_event_filter_is_validation_error(shop, events):
    answer = await shop.http.put(
        f"{shop.base}/webhooks/erp", json={"url": PUBLIC, "events": events}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert (await shop.http.get(f"{shop.base}/webhooks/erp")).status_code == 404


BAD_URLS = [
    ("not a url", "not-a-url"),
    ("ftp://files.example.com/x", "not-http"),
    ("https://", "no-host"),
    ("https://" + "a" * 2040 + ".com/", "too-long"),
    ("https://user:pw@example.com/", "credentials"),
    ("https://10.0.0.5/hook", "private-v4"),
    ("https://192.168.1.1/hook", "private-v4-b"),
    ("https://169.254.169.254/latest/meta-data", "link-local-metadata"),
    ("https://[fd00::1]/hook", "private-v6"),
    ("https://[::ffff:10.0.0.1]/hook", "mapped-private"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://intranet/hook", "single-label"),
    ("https://printer.local/hook", "mdns"),
]


@pytest.mark.parametrize(("url", "case"), BAD_URLS, ids=[c for _, c in BAD_URLS])
async def test_an_endpoint_url_a_shop_may_not_register_is_422(shop, url, case):
    """Not a URL, too long, private or link-local addresses: refused, nothing stored."""
    answer = await shop.http.put(f"{shop.base}/webhooks/erp", json={"url": url})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    assert (await shop.http.get(f"{shop.base}/webhooks/erp")).status_code == 404


async def test_development_mode_allows_http_to_loopback_only(shop):
    """The tests' hook runs with WEBHOOKS_ALLOW_HTTP=1."""
    path = f"{shop.base}/webhooks/local"
    assert (await shop.http.put(path, json={"url": "http://127.0.0.1:9/x"})).status_code == 201
    assert (await shop.http.put(path, json={"url": "http://localhost:9/x"})).status_code == 200
    private = await shop.http.put(path, json={"url": "http://10.1.2.3/x"})
    assert private.status_code == 422


@pytest.mark.parametrize(
    "url",
    ["http://erp.example.com/hook", "https://127.0.0.1/hook", "https://localhost/hook"],
    ids=["http", "loopback", "localhost"],
)
async def test_production_mode_refuses_http_and_loopback(dead_temporal_hook, env_token, url):
    """A hook without WEBHOOKS_ALLOW_HTTP (production) takes only public https endpoints."""
    token, shop_id = env_token
    async with bearer_client(dead_temporal_hook, token) as http:
        refused = await http.put(f"/v1/shops/{shop_id}/webhooks/prod", json={"url": url})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_error"
        accepted = await http.put(f"/v1/shops/{shop_id}/webhooks/prod", json={"url": PUBLIC})
        assert accepted.status_code in (200, 201)


@pytest.fixture
def env_token(hook_stack) -> tuple[str, str]:
    [(token, shop_id)] = hook_stack.settings.admin_hook_tokens.items()
    return token, shop_id


async def test_signing_secrets_are_never_logged(shop, caplog):
    """Made, rotated and replayed (Idempotency-Key): the secret is only in the answers."""
    caplog.set_level(logging.DEBUG)
    path = f"{shop.base}/webhooks/erp"
    made = await shop.http.put(path, json={"url": PUBLIC}, headers={"Idempotency-Key": "mk-1"})
    again = await shop.http.put(path, json={"url": PUBLIC}, headers={"Idempotency-Key": "mk-1"})
    assert again.json()["secret"] == made.json()["secret"], "a replay answers like the first"
    rotated = await shop.http.post(f"{path}/rotate-secret")
    secrets = [made.json()["secret"], rotated.json()["secret"]]
    assert all(s.startswith("whsec_") for s in secrets)
    logged = caplog.text
    assert logged, "the hook's log was captured"
    assert not any(s in logged or s.removeprefix("whsec_") in logged for s in secrets)
