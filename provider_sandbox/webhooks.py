"""Signed webhook events: queued with the change they describe, delivered from an outbox.

Events are queued in the same transaction as the change they describe (see
`PaymentProvider.settle_due_refunds`), so a crash between "settled" and "sent" only delays
the webhook: the next process on the same database delivers it.

Events (`refund.succeeded`, `refund.failed`) are JSON objects:
`{"id": "evt_…", "type", "created": <provider time>, "account": null | "<account>",
"refund": <the refund object, metadata included>}`. The body of an event is frozen when it is
queued, so every delivery of it sends the same bytes.

Each delivery is signed as a real provider signs:
`X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` with the webhook
secret, where `t` is the wall-clock time of that attempt (never the provider clock, which
may run fast: the receiver compares `t` with its own clock).

Like a real provider, the sandbox can deliver late, twice and out of order
(`WebhookPolicy`, from `--webhook-delay-seconds`, `--webhook-duplicate-rate` and
`--webhook-shuffle-seconds`). Failed attempts are retried with backoff, at most
`MAX_ATTEMPTS` times per delivery.
"""

import hashlib
import hmac
import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from provider_sandbox.clock import Clock
from provider_sandbox.storage import Store, WebhookEvent

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"

MAX_ATTEMPTS = 8
"""With the backoff below this keeps trying for about a minute, enough to ride out a
receiver restart in tests without retrying a dead URL forever."""

FIRST_RETRY_SECONDS = 0.5
"""Short, because the usual receiver in tests is just starting up."""

MAX_RETRY_SECONDS = 30.0

DELIVERY_TIMEOUT = httpx.Timeout(5.0)
"""A receiver slower than this is treated as down; the event is retried later."""

DUPLICATE_SUFFIX = ":duplicate"
"""Marks the outbox row of an event's second delivery (the event id inside is the same)."""

MIN_DUPLICATE_LAG_SECONDS = 1.0
"""A duplicate goes out up to this much (or the shuffle window, if longer) after the first
delivery's scheduled time, so it usually arrives second, and late."""


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `X-Signature` header value for a payload sent at `timestamp` (unix seconds)."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the given number of failed attempts (exponential backoff)."""
    seconds = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class WebhookPolicy:
    """How kindly the sandbox delivers webhooks; the defaults send each event once, at once."""

    delay_seconds: float = 0.0
    """Every delivery is first tried this long after its event happened (late webhooks)."""
    duplicate_rate: float = 0.0
    """The share of events delivered twice (0 to 1)."""
    shuffle_seconds: float = 0.0
    """Every delivery waits a further random 0 to this many seconds, so events that happen
    close together arrive out of order."""


class WebhookOutbox:
    """Queues events for delivery, as late, as often and in the order the policy says.

    Args:
        store: Holds the outbox; the caller holds its transaction.
        policy: Delays, duplicates and shuffling.
        wall_clock: Real time, which schedules deliveries.
        rng: The randomness of duplicates and shuffling.
    """

    def __init__(
        self, store: Store, policy: WebhookPolicy, wall_clock: Clock, rng: random.Random
    ) -> None:
        self._store = store
        self._policy = policy
        self._wall_clock = wall_clock
        self._random = rng

    def queue(self, event: dict[str, Any]) -> None:
        """Queue an event (its `id` names it); the body is frozen as bytes now."""
        payload = json.dumps(event).encode()
        now = self._wall_clock()
        first = now + timedelta(seconds=self._policy.delay_seconds + self._jitter())
        self._store.insert_delivery(event["id"], payload, now, first)
        if self._random.random() < self._policy.duplicate_rate:
            lag = self._random.uniform(
                0, max(self._policy.shuffle_seconds, MIN_DUPLICATE_LAG_SECONDS)
            )
            second = first + timedelta(seconds=lag)
            self._store.insert_delivery(event["id"] + DUPLICATE_SUFFIX, payload, now, second)

    def _jitter(self) -> float:
        return self._random.uniform(0, self._policy.shuffle_seconds)


class WebhookSender:
    """Posts due outbox deliveries to one URL.

    Args:
        store: Holds the outbox.
        client: The HTTP client to post with; its owner closes it.
        url: Where events go.
        secret: Signs each body; without it the `X-Signature` header is left out.
        wall_clock: Real time: when deliveries are due, and the signature's timestamp.
    """

    def __init__(
        self,
        store: Store,
        client: httpx.AsyncClient,
        url: str,
        secret: str | None,
        wall_clock: Clock,
    ):
        self._store = store
        self._client = client
        self._url = url
        self._secret = secret
        self._wall_clock = wall_clock

    async def deliver_due(self) -> None:
        """Try each due delivery once, and record the result for the next round."""
        for event in self._store.due_events(self._wall_clock()):
            await self._deliver(event)

    async def _deliver(self, event: WebhookEvent) -> None:
        try:
            response = await self._client.post(
                self._url, content=event.payload, headers=self._headers(event.payload)
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            self._record_failure(event, type(error).__name__)
        else:
            self._store.mark_event_delivered(event.id, self._wall_clock())

    def _headers(self, payload: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            timestamp = int(self._wall_clock().timestamp())
            headers[SIGNATURE_HEADER] = sign(payload, self._secret, timestamp)
        return headers

    def _record_failure(self, event: WebhookEvent, reason: str) -> None:
        now = self._wall_clock()
        attempts = event.attempts + 1
        give_up = attempts >= MAX_ATTEMPTS
        retry_at = None if give_up else now + retry_delay(attempts)
        self._store.mark_event_failed(event.id, retry_at=retry_at, at=now)
        # Neither the URL (it may embed a token) nor the secret goes into the log.
        logger.warning(
            "webhook %s delivery attempt %d failed (%s)%s",
            event.id,
            attempts,
            reason,
            "; giving up" if give_up else "",
        )
