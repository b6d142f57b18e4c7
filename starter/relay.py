"""The relay: sends every event to the shop's webhook endpoints, signed, in order per
cancellation, at least once.

``python -m starter.relay`` runs one; any number may run side by side (docs/events.md).
Each relay:

- claims due deliveries with ``FOR UPDATE SKIP LOCKED`` under a lease (so relays never
  send the same delivery at once, and one that dies leaves nothing behind: the lease runs
  out and the delivery is due again);
- wakes on ``LISTEN webhook_deliveries`` the moment a transition commits, and polls every
  :data:`POLL_INTERVAL` anyway, so a lost notification or a database restart delays a
  delivery by a second at most;
- sends up to ``WEBHOOKS_RELAY_CONCURRENCY`` deliveries at once, never two of one
  cancellation to one endpoint (the claim skips a delivery while an earlier one waits);
- announces ``cancellation.closed`` for runs whose undo window ran out, and prunes
  delivered rows after ``WEBHOOKS_RETENTION``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import asyncpg
import httpcore
import httpx

from activities.database import apply_migrations, create_pool
from activities.events import NOTIFY_CHANNEL, Claimed, EventStore
from domain.events import event_body, is_forbidden_address, next_retry, sign
from starter.config import Settings

log = logging.getLogger("starter.relay")

POLL_INTERVAL: Final = 1.0
"""Seconds between looks for due deliveries when no notification came: the bound on how
late a delivery is after a lost notification, a reconnect, or a retry falling due."""
LEASE_MARGIN: Final = timedelta(seconds=5)
"""A claim outlives the receiver's timeout by this much, so a live relay always records
its outcome before another may claim the delivery again."""
CLOSE_GRACE: Final = timedelta(seconds=5)
"""``closed`` is announced this long after an undo window ends: an undo the run took in
its last second has then been written, and the closing check sees it."""
PRUNE_EVERY: Final = timedelta(minutes=10)
RECONNECT_DELAY: Final = 1.0
"""Seconds between attempts to reach a database that went away."""
USER_AGENT: Final = "order-cancellations-webhooks/1"
MAX_ANSWER_BYTES: Final = 64 * 1024
"""A receiver's answer is read up to this much (only its status counts)."""


@dataclass(frozen=True)
class RelayConfig:
    """How one relay behaves; :meth:`from_settings` reads it from the settings."""

    concurrency: int
    timeout: float
    retry_scale: float
    retention: timedelta
    failed_retention: timedelta
    allow_loopback: bool
    poll_interval: float = POLL_INTERVAL
    close_grace: timedelta = CLOSE_GRACE
    prune_every: timedelta = PRUNE_EVERY
    lease_margin: timedelta = LEASE_MARGIN

    @property
    def lease(self) -> timedelta:
        """How long a claim holds a delivery."""
        return timedelta(seconds=self.timeout) + self.lease_margin

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RelayConfig:
        """The relay's part of the settings."""
        values: dict[str, Any] = {
            "concurrency": settings.webhooks_relay_concurrency,
            "timeout": settings.webhooks_timeout,
            "retry_scale": settings.webhooks_retry_scale,
            "retention": settings.webhooks_retention,
            "failed_retention": settings.webhooks_failed_retention,
            "allow_loopback": settings.webhooks_allow_http,
        }
        return cls(**(values | overrides))


class Relay:
    """Delivers webhooks until :meth:`run`'s ``stop`` is set."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, config: RelayConfig) -> None:
        self._dsn = dsn
        self._store = EventStore(pool)
        self._config = config
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(
            transport=_GuardedTransport(
                allow_loopback=config.allow_loopback, connections=config.concurrency
            ),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )
        self.delivered = 0
        """Deliveries this relay completed (2xx), for whoever runs it in-process."""

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then let deliveries in flight finish."""
        helpers = [
            asyncio.create_task(self._listen(stop)),
            asyncio.create_task(self._housekeeping(stop)),
        ]
        try:
            await self._dispatch(stop)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=self._config.timeout + 1)
            for task in self._in_flight:
                task.cancel()
            await self._http.aclose()

    # ------------------------------------------------------------------ the loops

    async def _dispatch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            free = self._config.concurrency - len(self._in_flight)
            wait = self._config.poll_interval
            if free > 0:
                # A retry falls due at most a poll interval before it is sent (the shortest
                # wait is 5 s). A due delivery that isn't claimed waits for an earlier event
                # of its cancellation, whose outcome notifies (docs/events.md).
                try:
                    claimed = await self._store.claim(free, self._config.lease)
                    if len(claimed) == free:
                        wait = 0.0  # there may be more: look again once a slot frees
                except Exception as err:  # the database may be restarting: try again soon
                    log.warning("relay: can't claim deliveries: %s", _describe(err))
                    claimed = []
                    wait = RECONNECT_DELAY
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._in_flight.add(task)
                    task.add_done_callback(self._finished)
            if wait > 0:
                await _wait_any(self._wake, stop, wait)

    def _finished(self, task: asyncio.Task[None]) -> None:
        was_full = len(self._in_flight) >= self._config.concurrency
        self._in_flight.discard(task)
        # A slot is free again: look for more. (A cancellation's next event, due now that
        # this one is done, comes with a NOTIFY from the outcome's own statement.)
        if was_full:
            self._wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake on every commit that queued deliveries; reconnect when the database left."""
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                self._wake.set()  # notifications sent while we were away are lost: look now
                while not stop.is_set() and not conn.is_closed():
                    await _wait_any(stop, None, self._config.poll_interval)
                    await conn.execute("SELECT 1")  # notices a dead connection
            except Exception as err:
                log.info("relay: listening for notifications failed: %s", _describe(err))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            await _wait_any(stop, None, RECONNECT_DELAY)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Announce runs closed by their undo window; prune old deliveries now and then."""
        next_prune = 0.0
        while not stop.is_set():
            try:
                if await self._store.close_expired(self._config.close_grace):
                    self._wake.set()
                if time.monotonic() >= next_prune:
                    pruned = await self._store.prune(
                        self._config.retention, self._config.failed_retention
                    )
                    if pruned:
                        log.info("relay: pruned %d finished deliveries", pruned)
                    next_prune = time.monotonic() + self._config.prune_every.total_seconds()
            except Exception as err:
                log.warning("relay: housekeeping failed: %s", _describe(err))
            await _wait_any(stop, None, self._config.poll_interval)

    # ------------------------------------------------------------------ one delivery

    async def _deliver(self, delivery: Claimed) -> None:
        body = event_body(delivery.type, delivery.occurred_at, delivery.sequence, delivery.data)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(delivery.signing_secrets, delivery.event_id, timestamp, body),
        }
        error: str | None
        try:
            # One deadline for connecting, sending and the answer's status: a receiver that
            # answers 200 after it has not delivered, as far as we know.
            async with (
                asyncio.timeout(self._config.timeout),
                self._http.stream("POST", delivery.url, content=body, headers=headers) as answer,
            ):
                status = answer.status_code
                # Read a short answer to its end, so the connection is kept for the next
                # delivery; a long one is cut (closing the connection), never kept in memory.
                kept = 0
                async for chunk in answer.aiter_raw():
                    kept += len(chunk)
                    if kept > MAX_ANSWER_BYTES:
                        break
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except TimeoutError:
            error = f"no answer within {self._config.timeout:g} s"
        except Exception as err:  # refused, reset, TLS, a URL httpx won't take: all failures
            error = _describe(err)
        try:
            if error is None:
                await self._store.delivered(delivery.delivery_id, delivery.attempts)
                self.delivered += 1
                return
            retry_in = next_retry(delivery.attempts, self._config.retry_scale)
            await self._store.attempt_failed(
                delivery.delivery_id, delivery.attempts, error, retry_in
            )
            log.info(
                "relay: delivery %s attempt %d failed (%s); %s",
                delivery.delivery_id,
                delivery.attempts,
                error,
                f"retry in {retry_in}" if retry_in is not None else "failed for good",
            )
        except Exception as err:
            # The outcome is lost with the database; the lease runs out and the delivery is
            # sent again (at least once: receivers deduplicate by webhook-id).
            log.warning("relay: can't record delivery %s: %s", delivery.delivery_id, _describe(err))


# ---------------------------------------------------------------------- no SSRF


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses (and loopback in development).

    The host is resolved here and the connection made to the address that was checked, so
    a name that resolves differently a moment later (DNS rebinding) can't slip through;
    TLS still verifies the certificate against the host name.
    """

    def __init__(self, allow_loopback: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_loopback = allow_loopback

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface names it so)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
                ipaddress.ip_address(host)
            ]
        except ValueError:  # a name: resolve it here, and connect to what was checked
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as err:
                raise httpcore.ConnectError(f"can't resolve {host}: {err.strerror}") from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses or any(
            is_forbidden_address(a, allow_loopback=self._allow_loopback) for a in addresses
        ):
            raise httpcore.ConnectError(f"{host} resolves to an address webhooks may not reach")
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface names it so)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over :class:`_GuardedBackend`.

    httpx has no public way to pass a network backend; its transport keeps the connection
    pool in ``_pool``, which is replaced here with one over the guarded backend.
    """

    def __init__(self, *, allow_loopback: bool, connections: int) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=connections * 2,
            max_keepalive_connections=connections,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(allow_loopback),
        )


# ---------------------------------------------------------------------- helpers


async def _wait_any(event: asyncio.Event, other: asyncio.Event | None, seconds: float) -> None:
    """Wait until ``event`` (or ``other``) is set, at most ``seconds``."""
    waits = [asyncio.create_task(event.wait())]
    if other is not None:
        waits.append(asyncio.create_task(other.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


def _describe(err: BaseException) -> str:
    """An error for the log and ``last_error``: its kind and message, never a URL's query."""
    text = str(err).split("\n")[0][:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ---------------------------------------------------------------------- the process


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run one relay until SIGTERM or SIGINT."""
    dsn = settings.require_database()
    await apply_migrations(dsn)
    pool = await create_pool(dsn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = Relay(dsn, pool, RelayConfig.from_settings(settings))
    try:
        print("relay ready", flush=True)
        if ready is not None:
            ready.set()
        await relay.run(stop)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m starter.relay``: read the environment once and relay until stopped."""
    parser = argparse.ArgumentParser(prog="python -m starter.relay", description=__doc__)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request's URL; a shop's endpoint URL may carry a token of its own.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(Settings.from_env()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
