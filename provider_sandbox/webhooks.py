"""Delivery of signed webhook events from the outbox.

Events are queued in the same transaction as the change they describe (see
`PaymentProvider.settle_due_refunds`), so a crash between "settled" and "sent" only delays
the webhook: the next process on the same database delivers it.
"""

import hashlib
import hmac
import logging
from datetime import datetime, timedelta

import httpx

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


def sign(payload: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 of a payload, as sent in the `X-Signature` header."""
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the given number of failed attempts (exponential backoff)."""
    seconds = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    return timedelta(seconds=seconds)


class WebhookSender:
    """Posts due outbox events to one URL.

    Args:
        store: Holds the outbox.
        client: The HTTP client to post with; its owner closes it.
        url: Where events go.
        secret: Signs each body; without it the `X-Signature` header is left out.
    """

    def __init__(self, store: Store, client: httpx.AsyncClient, url: str, secret: str | None):
        self._store = store
        self._client = client
        self._url = url
        self._secret = secret

    async def deliver_due(self, now: datetime) -> None:
        """Try each due event once, and record the result for the next round."""
        for event in self._store.due_events(now):
            await self._deliver(event, now)

    async def _deliver(self, event: WebhookEvent, now: datetime) -> None:
        try:
            response = await self._client.post(
                self._url, content=event.payload, headers=self._headers(event.payload)
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            self._record_failure(event, now, type(error).__name__)
        else:
            self._store.mark_event_delivered(event.id, now)

    def _headers(self, payload: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(payload, self._secret)
        return headers

    def _record_failure(self, event: WebhookEvent, now: datetime, reason: str) -> None:
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
