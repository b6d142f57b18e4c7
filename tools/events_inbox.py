"""The dev stack's webhook inbox: a small receiver, so a person sees the events arrive.

``python -m tools.events_inbox serve --port 8002 --secret-file F`` receives webhooks on
``POST /events``, checks each signature against the secret in ``F`` (the endpoint's
``whsec_…``, written by the dev stack when it subscribed the inbox), keeps the latest
events in memory and prints one line per event. ``GET /events?after=N`` lists them.

``python -m starter events tail [--follow]`` prints what the inbox holds (and, with
``--follow``, what arrives next); the demo prints each scenario's events from it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domain.events import sign
from tools import ports

DEFAULT_PORT: Final = 8002
KEPT: Final = 1000
"""Events the inbox remembers; older ones drop off (it is a viewer, not a store)."""
TOLERANCE_SECONDS: Final = 300
"""Standard Webhooks' replay window: a timestamp further off is refused."""


def inbox_url(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """The inbox's base URL: ``EVENTS_INBOX_URL`` or the dev stack's default."""
    env = os.environ if env is None else env
    return env.get("EVENTS_INBOX_URL") or f"http://{ports.LOOPBACK}:{DEFAULT_PORT}"


def verified(secret: str | None, headers: dict[str, str], body: bytes) -> bool:
    """Whether a request carries a valid Standard Webhooks signature by ``secret``."""
    if secret is None:
        return False
    message_id = headers.get("webhook-id", "")
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    if abs(time.time() - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = sign([secret], message_id, timestamp, body)
    return any(
        hmac.compare_digest(expected, given)
        for given in headers.get("webhook-signature", "").split(" ")
    )


def create_app(secret_file: Path | None) -> Starlette:
    """The inbox: ``POST /events`` receives, ``GET /events`` lists, ``GET /healthz``."""
    events: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEPT)
    counter = [0]

    def secret() -> str | None:
        if secret_file is None:
            return None
        try:
            return secret_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        ok = verified(secret(), headers, body)
        if not ok:
            return JSONResponse({"error": "signature does not verify"}, status_code=401)
        try:
            document = json.loads(body)
            data = document["data"]
            entry = {
                "webhook_id": headers["webhook-id"],
                "type": document["type"],
                "timestamp": document["timestamp"],
                "sequence": data["sequence"],
                "cancellation_id": data["cancellation"]["cancellation_id"],
                "status": data["cancellation"]["status"],
                "notify_customer": data["notify_customer"],
            }
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not an event"}, status_code=400)
        counter[0] += 1
        entry["n"] = counter[0]
        events.append(entry)
        print(format_event(entry), flush=True)
        return JSONResponse({"received": entry["n"]})

    async def listing(request: Request) -> JSONResponse:
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            after = 0
        cancellation = request.query_params.get("cancellation_id")
        items = [
            e
            for e in events
            if e["n"] > after and (cancellation is None or e["cancellation_id"] == cancellation)
        ]
        return JSONResponse({"items": items, "last": counter[0]})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/events", receive, methods=["POST"]),
            Route("/events", listing, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def format_event(entry: dict[str, Any]) -> str:
    """One line for people: sequence, type, cancellation, status."""
    notify = "  (notify customer)" if entry.get("notify_customer") else ""
    return (
        f"#{entry['sequence']:<3} {entry['type']:<32} {entry['cancellation_id']}"
        f"  [{entry['status']}]{notify}"
    )


def fetch(url: str, *, after: int = 0, cancellation_id: str | None = None) -> dict[str, Any]:
    """The inbox's events after ``after`` (optionally of one cancellation)."""
    params: dict[str, Any] = {"after": after}
    if cancellation_id is not None:
        params["cancellation_id"] = cancellation_id
    answer = httpx.get(f"{url}/events", params=params, timeout=5, trust_env=False)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def print_events_of(url: str, cancellation_id: str, *, settle: float = 1.5) -> None:
    """Print a cancellation's events as the inbox received them (the demo, per scenario).

    Waits until no new one came for a moment: the relay sends within milliseconds.
    """
    seen = -1
    deadline = time.monotonic() + settle * 3
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            items = fetch(url, cancellation_id=cancellation_id)["items"]
        except httpx.HTTPError:
            print("   Events: the inbox does not answer (python -m starter dev starts it)")
            return
        if len(items) == seen:
            break
        seen = len(items)
        time.sleep(settle / 3)
    print(f"   Events received by the inbox ({len(items)}):")
    for entry in items:
        print(f"     {format_event(entry)}", flush=True)


def _tail(url: str, follow: bool) -> int:
    after = 0
    try:
        while True:
            try:
                page = fetch(url, after=after)
            except httpx.HTTPError as err:
                print(f"events: the inbox at {url} does not answer ({err})", file=sys.stderr)
                return 1
            for entry in page["items"]:
                print(format_event(entry), flush=True)
            after = page["last"]
            if not follow:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str]) -> int:
    """``serve`` the inbox, or ``tail`` what it received."""
    parser = argparse.ArgumentParser(prog="python -m starter events", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the inbox")
    serve.add_argument("--host", default=ports.LOOPBACK)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--secret-file", type=Path, help="the endpoint's whsec_ secret")
    tail = commands.add_parser("tail", help="print the events the inbox received")
    tail.add_argument("--url", default=inbox_url(), help="the inbox (EVENTS_INBOX_URL)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
    args = parser.parse_args(argv)
    if args.command == "tail":
        return _tail(args.url.rstrip("/"), args.follow)
    config = uvicorn.Config(
        create_app(args.secret_file),
        host=args.host,
        port=args.port,
        access_log=False,
        server_header=False,
    )
    print(f"events inbox ready on http://{args.host}:{args.port}/events", flush=True)
    asyncio.run(uvicorn.Server(config).serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
