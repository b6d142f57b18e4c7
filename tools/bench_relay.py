"""A webhook receiver for the benchmark and the chaos run: what the relay delivered, when.

:class:`RelayProbe` serves ``POST /events`` on a loopback port inside the measuring process
and notes, for every delivery, the event (``webhook-id``, cancellation, sequence, type), when
it arrived and when its transition happened (the body's ``timestamp``). The bench subscribes
it to every event of the batch's shop while a relay process runs beside the worker
(:meth:`tools.bench_stack.BenchStack.batch`); the chaos run checks from it that every event
arrived, in order per cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tools import ports, processes

STARTUP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Arrival:
    """One delivery the probe took."""

    webhook_id: str
    cancellation_id: str
    sequence: int
    type: str
    arrived: float
    """Wall clock (``time.time()``) on arrival."""
    happened: float
    """Wall clock of the transition (the event's ``timestamp``)."""


class RelayProbe(processes.AsyncServer):
    """A receiver that answers ``204`` at once and keeps every arrival."""

    def __init__(self) -> None:
        self.port = ports.free_port_off_dev_stack()
        self.url = f"http://{ports.LOOPBACK}:{self.port}/events"
        self.arrivals: list[Arrival] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_async(self) -> None:
        """Serve on the probe's port; back once the server has started."""

        async def receive(request: Request) -> Response:
            document = json.loads(await request.body())
            self.arrivals.append(
                Arrival(
                    webhook_id=request.headers.get("webhook-id", ""),
                    cancellation_id=document["data"]["cancellation"]["cancellation_id"],
                    sequence=int(document["data"]["sequence"]),
                    type=document["type"],
                    arrived=time.time(),
                    happened=datetime.fromisoformat(document["timestamp"]).timestamp(),
                )
            )
            return Response(status_code=204)

        app = Starlette(routes=[Route("/events", receive, methods=["POST"])])
        config = uvicorn.Config(
            app, host=ports.LOOPBACK, port=self.port, log_config=None, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError("the bench's webhook receiver did not start")
            await asyncio.sleep(0.02)

    async def stop_async(self) -> None:
        """Ask the server to exit and wait until it has."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def of(self, cancellation_ids: Collection[str]) -> list[Arrival]:
        """The arrivals of these cancellations."""
        return [a for a in self.arrivals if a.cancellation_id in cancellation_ids]

    async def wait_for(self, cancellation_ids: Collection[str], count: int, within: float) -> bool:
        """Wait until ``count`` events of these cancellations arrived; ``False`` on timeout."""
        deadline = time.monotonic() + within
        while len(self.of(cancellation_ids)) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def summary(
        self,
        cancellation_ids: Collection[str],
        expected: int,
        percentile: Callable[[Sequence[float], float], float],
    ) -> dict[str, Any]:
        """Events delivered, per second of the delivery window, and latency percentiles."""
        arrivals = self.of(cancellation_ids)
        latencies = [(a.arrived - a.happened) * 1000 for a in arrivals]
        first = min((a.happened for a in arrivals), default=math.nan)
        last = max((a.arrived for a in arrivals), default=math.nan)
        span = last - first
        return {
            "events_expected": expected,
            "events_delivered": len(arrivals),
            "events_per_s": round(len(arrivals) / span, 1) if span > 0 else None,
            "latency_p50_ms": _rounded(percentile(latencies, 50)),
            "latency_p95_ms": _rounded(percentile(latencies, 95)),
            "latency_max_ms": _rounded(max(latencies, default=math.nan)),
        }


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)
