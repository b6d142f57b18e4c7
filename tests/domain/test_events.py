"""Events out, the pure part: signatures a third-party verifier accepts, the retry schedule,
event filters and endpoint URLs."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from domain.errors import CancellationError
from domain.events import (
    RETRY_SCHEDULE,
    EventType,
    check_endpoint_url,
    check_filters,
    event_body,
    event_data,
    matches,
    new_secret,
    next_retry,
    sign,
)


def _headers(message_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


class TestSignatures:
    def test_standardwebhooks_verifies_what_we_sign(self):
        secret = new_secret(bytes(range(32)))
        body = event_body(
            "cancellation.accepted", datetime(2026, 1, 2, tzinfo=UTC), 2, '{"x": "ü"}'
        )
        now = int(time.time())
        document = Webhook(secret).verify(
            body, _headers("evt_1", now, sign([secret], "evt_1", now, body))
        )
        assert document["type"] == "cancellation.accepted"
        assert document["data"] == {"sequence": 2, "x": "ü"}

    def test_during_a_rotation_either_secret_verifies(self):
        old, new = new_secret(b"o" * 32), new_secret(b"n" * 32)
        body = b'{"type":"cancellation.closed"}'
        now = int(time.time())
        signature = sign([new, old], "evt_2", now, body)
        assert len(signature.split(" ")) == 2
        for secret in (old, new):
            Webhook(secret).verify(body, _headers("evt_2", now, signature))
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret(b"x" * 32)).verify(body, _headers("evt_2", now, signature))

    def test_a_changed_body_or_id_does_not_verify(self):
        secret = new_secret(b"s" * 32)
        now = int(time.time())
        signature = sign([secret], "evt_3", now, b"{}")
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(b'{"a":1}', _headers("evt_3", now, signature))
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(b"{}", _headers("evt_4", now, signature))

    def test_the_body_puts_the_sequence_into_the_stored_data(self):
        data = event_data('{"status":"canceled"}', notify_customer=True, customer_note='a "b"')
        body = event_body("cancellation.completed", datetime(2026, 1, 2, tzinfo=UTC), 4, data)
        assert json.loads(body) == {
            "type": "cancellation.completed",
            "timestamp": "2026-01-02T00:00:00+00:00",
            "data": {
                "sequence": 4,
                "cancellation": {"status": "canceled"},
                "notify_customer": True,
                "customer_note": 'a "b"',
            },
        }
        empty = event_body("x", datetime(2026, 1, 2, tzinfo=UTC), 1, " { } ")
        assert json.loads(empty)["data"] == {"sequence": 1}

    def test_secrets_are_whsec_and_256_bits(self):
        secret = new_secret(b"k" * 32)
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


class TestRetrySchedule:
    def test_retries_span_more_than_a_day_then_give_up(self):
        assert sum(RETRY_SCHEDULE, timedelta()) >= timedelta(hours=24)
        waits = [next_retry(n) for n in range(1, len(RETRY_SCHEDULE) + 1)]
        assert waits == list(RETRY_SCHEDULE)
        assert next_retry(len(RETRY_SCHEDULE) + 1) is None, "then the delivery is failed"

    def test_the_scale_shrinks_the_schedule_for_tests(self):
        assert next_retry(2, scale=0.001) == timedelta(minutes=5) * 0.001


class TestFilters:
    @pytest.mark.parametrize(
        ("patterns", "event_type", "expected"),
        [
            (["cancellation.*"], "cancellation.closed", True),
            (["*"], "cancellation.accepted", True),
            (["cancellation.accepted"], "cancellation.accepted", True),
            (["cancellation.accepted"], "cancellation.rejected", False),
        ],
    )
    def test_matches(self, patterns, event_type, expected):
        assert matches(check_filters(patterns), event_type) is expected

    def test_every_event_type_is_a_valid_filter(self):
        assert check_filters([t.value for t in EventType]) == sorted(t.value for t in EventType)


class TestEndpointUrls:
    @pytest.mark.parametrize(
        "url",
        [
            "https://erp.example.com/hooks",
            "https://erp.example.com:8443/a?b=c",
            "https://93.184.216.34/hook",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        ],
    )
    def test_public_https_is_accepted(self, url):
        assert check_endpoint_url(url, allow_http=False) == url

    @pytest.mark.parametrize(
        "url",
        [
            "http://erp.example.com/hooks",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://localhost/x",
            "https://10.0.0.1/x",
            "https://172.16.5.4/x",
            "https://100.64.0.1/x",
            "https://[fe80::1]/x",
            "https://example.com/#frag",
            "https://example.com:0/",
            "https://exa mple.com/",
            "https://example.com:99999/",
        ],
    )
    def test_production_refuses(self, url):
        with pytest.raises(CancellationError) as refused:
            check_endpoint_url(url, allow_http=False)
        assert refused.value.code == "validation_error"

    def test_development_allows_http_to_loopback(self):
        assert check_endpoint_url("http://127.0.0.1:9000/x", allow_http=True)
        assert check_endpoint_url("http://localhost:9000/x", allow_http=True)
        with pytest.raises(CancellationError):
            check_endpoint_url("http://192.168.0.10/x", allow_http=True)
