"""The chaos run's check of events out: every event of every cancellation reached the
receiver, in order per cancellation, whatever was killed meanwhile.

The run subscribes a :class:`~tools.bench_relay.RelayProbe` to every event of its shop
before it drives orders. After the orders settle it waits (bounded) until no delivery is
pending, then compares what arrived with the ``webhook_events`` table:

- every event the store recorded arrived at least once (duplicates are allowed: a relay
  killed mid-delivery sends the event again, with the same ``webhook-id``);
- per cancellation, events first arrived in sequence order;
- no delivery ended ``failed`` (the receiver never went down, so none may give up).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from activities.events import EventStore
from tools.bench_relay import RelayProbe

DRAIN_TIMEOUT_SECONDS = 120.0
"""A relay killed mid-delivery holds its claim for the timeout plus 5 s; a database restart
costs a few seconds more. Two minutes is far beyond both."""


@dataclass(frozen=True)
class EventsFinding:
    """One broken promise of events out."""

    kind: str
    """``event_not_delivered``, ``event_out_of_order`` or ``delivery_failed``."""
    subject: str
    detail: str


@dataclass
class EventsCheck:
    """What the check looked at and found."""

    events: int = 0
    deliveries: int = 0
    duplicates: int = 0
    pending_left: int = 0
    findings: list[EventsFinding] | None = None


async def subscribe(database_url: str, shop_id: str, probe: RelayProbe) -> None:
    """Send every event of the shop to the probe."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await EventStore(pool).put_endpoint(shop_id, "chaos", probe.url, ["cancellation.*"])
    finally:
        await pool.close()


async def check_events(database_url: str, shop_id: str, probe: RelayProbe) -> EventsCheck:
    """Wait for the deliveries to drain, then compare the store's events with the arrivals."""
    result = EventsCheck(findings=[])
    assert result.findings is not None
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while True:
            pending = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE shop_id=$1 AND status='pending'",
                shop_id,
            )
            if pending == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        result.pending_left = int(pending)
        events = await conn.fetch(
            "SELECT event_id, cancellation_id, sequence FROM webhook_events WHERE shop_id=$1",
            shop_id,
        )
        failed = await conn.fetch(
            "SELECT delivery_id, cancellation_id, sequence, last_error FROM webhook_deliveries"
            " WHERE shop_id=$1 AND status='failed'",
            shop_id,
        )
    finally:
        await conn.close()

    arrivals = list(probe.arrivals)
    result.events = len(events)
    result.deliveries = len(arrivals)
    arrived = {a.webhook_id for a in arrivals}
    result.duplicates = len(arrivals) - len(arrived)
    for event in events:
        if event["event_id"] not in arrived:
            result.findings.append(
                EventsFinding(
                    "event_not_delivered",
                    event["cancellation_id"],
                    f"event #{event['sequence']} ({event['event_id']}) never arrived",
                )
            )
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for a in arrivals:
        if a.webhook_id not in seen:
            seen.add(a.webhook_id)
            first_seen[a.cancellation_id].append(a.sequence)
    for cancellation_id, sequences in first_seen.items():
        if sequences != sorted(sequences):
            result.findings.append(
                EventsFinding("event_out_of_order", cancellation_id, f"arrived as {sequences}")
            )
    for row in failed:
        result.findings.append(
            EventsFinding(
                "delivery_failed",
                row["cancellation_id"],
                f"event #{row['sequence']} failed: {row['last_error']}",
            )
        )
    if result.pending_left:
        result.findings.append(
            EventsFinding(
                "event_not_delivered",
                shop_id,
                f"{result.pending_left} deliveries still pending after"
                f" {DRAIN_TIMEOUT_SECONDS:.0f} s",
            )
        )
    return result
