"""Command line entry point: `python -m provider_sandbox --port 8001 --db sandbox.sqlite3`.

Each flag falls back to an environment variable, and this is the only module that reads the
environment. Prefer `PAYMENT_PROVIDER_WEBHOOK_SECRET` over `--webhook-secret`: command
lines are visible to every user of the machine.

A real provider's rules, with Stripe's defaults, each adjustable for tests (flag, then its
environment variable):

- `--idempotency-retention-seconds` (`PAYMENT_PROVIDER_IDEMPOTENCY_RETENTION_SECONDS`,
  default 86400): a key's answer is replayed this long, in provider time; after that the
  key is new, and a retry moves money again.
- `--clock-speed` (`PAYMENT_PROVIDER_CLOCK_SPEED`, default 1): provider seconds per real
  second, for settling, failing, recapture windows and key expiry; 3600 makes a day pass in
  24 s.
- `--webhook-delay-seconds` (`PAYMENT_PROVIDER_WEBHOOK_DELAY_SECONDS`, default 0): every
  webhook delivery is first tried this late (real seconds).
- `--webhook-duplicate-rate` (`PAYMENT_PROVIDER_WEBHOOK_DUPLICATE_RATE`, default 0): the
  share of events delivered twice.
- `--webhook-shuffle-seconds` (`PAYMENT_PROVIDER_WEBHOOK_SHUFFLE_SECONDS`, default 0): every
  delivery waits a further random 0 to this many seconds, so events arrive out of order.

Provider time can also be moved forward while the sandbox runs: `POST /v1/clock/advance`
`{"seconds": 90000}`.
"""

import argparse
import asyncio
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from provider_sandbox.app import DEFAULT_IDEMPOTENCY_RETENTION_SECONDS, SandboxOptions, create_app
from provider_sandbox.webhooks import WebhookPolicy

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001

GRACEFUL_SHUTDOWN_SECONDS = 2
"""An injected hang may hold a request for minutes; shutdown must not wait for it."""


@dataclass(frozen=True)
class Settings:
    """How to run the sandbox."""

    host: str
    port: int
    db_path: Path
    webhook_url: str | None
    webhook_secret: str | None
    options: SandboxOptions = field(default_factory=SandboxOptions)


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Read the command line, falling back to `PAYMENT_PROVIDER_*` environment variables."""
    parser = argparse.ArgumentParser(
        prog="python -m provider_sandbox",
        description="Run the card payment provider sandbox over one SQLite file.",
    )

    def option(flag: str, kind: Callable[[str], Any], default: str | None, text: str) -> None:
        # Each flag falls back to PAYMENT_PROVIDER_<FLAG>. A string default goes through `kind`
        # too, so a bad env value is a usage error.
        variable = "PAYMENT_PROVIDER_" + flag.removeprefix("--").upper().replace("-", "_")
        parser.add_argument(flag, type=kind, default=env.get(variable, default), help=text)

    option(
        "--host",
        str,
        DEFAULT_HOST,
        f"address to bind (PAYMENT_PROVIDER_HOST, default {DEFAULT_HOST})",
    )
    option(
        "--port",
        int,
        str(DEFAULT_PORT),
        f"port; 0 picks a free one (PAYMENT_PROVIDER_PORT, default {DEFAULT_PORT})",
    )
    option(
        "--db",
        Path,
        None,
        "SQLite file holding all state; created when missing (PAYMENT_PROVIDER_DB)",
    )
    option(
        "--webhook-url",
        str,
        None,
        "where refund.succeeded events go (PAYMENT_PROVIDER_WEBHOOK_URL)",
    )
    option(
        "--webhook-secret",
        str,
        None,
        "HMAC key for X-Signature (PAYMENT_PROVIDER_WEBHOOK_SECRET; preferred)",
    )
    option(
        "--idempotency-retention-seconds",
        _non_negative,
        str(DEFAULT_IDEMPOTENCY_RETENTION_SECONDS),
        "how long (provider time) a key's answer is replayed; after it the key is new"
        " (PAYMENT_PROVIDER_IDEMPOTENCY_RETENTION_SECONDS, default 86400: 24 h, like Stripe)",
    )
    option(
        "--clock-speed",
        _positive,
        "1",
        "provider seconds per real second (PAYMENT_PROVIDER_CLOCK_SPEED, default 1)",
    )
    option(
        "--webhook-delay-seconds",
        _non_negative,
        "0",
        "first try each webhook delivery this late (PAYMENT_PROVIDER_WEBHOOK_DELAY_SECONDS)",
    )
    option(
        "--webhook-duplicate-rate",
        _rate,
        "0",
        "share of events delivered twice, 0 to 1 (PAYMENT_PROVIDER_WEBHOOK_DUPLICATE_RATE)",
    )
    option(
        "--webhook-shuffle-seconds",
        _non_negative,
        "0",
        "delay each delivery a further random 0 to this many seconds, so events arrive"
        " out of order (PAYMENT_PROVIDER_WEBHOOK_SHUFFLE_SECONDS)",
    )
    args = parser.parse_args(argv)
    if args.db is None:
        parser.error("--db or PAYMENT_PROVIDER_DB is required")
    return Settings(
        host=args.host,
        port=args.port,
        db_path=Path(args.db),
        webhook_url=args.webhook_url or None,
        webhook_secret=args.webhook_secret or None,
        options=SandboxOptions(
            idempotency_retention_seconds=args.idempotency_retention_seconds,
            clock_speed=args.clock_speed,
            webhooks=WebhookPolicy(
                delay_seconds=args.webhook_delay_seconds,
                duplicate_rate=args.webhook_duplicate_rate,
                shuffle_seconds=args.webhook_shuffle_seconds,
            ),
        ),
    )


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _rate(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, announcing the address once the socket listens."""
    app = create_app(
        settings.db_path, settings.webhook_url, settings.webhook_secret, options=settings.options
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _AnnouncingServer(config)
    _exit_quietly_on_signals(server)
    await server.serve()


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints its address once it listens, for whoever started it."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # The configured host, with the real port: `--port 0` asks the OS for a free one.
            port = self.servers[0].sockets[0].getsockname()[1]
            host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
            print(f"provider sandbox listening on http://{host}:{port}", flush=True)


def _exit_quietly_on_signals(server: uvicorn.Server) -> None:
    # uvicorn handles SIGTERM/SIGINT while serving, shuts down gracefully, then re-raises
    # the signal to our handler. Asking the server to stop (instead of the default
    # handlers' abrupt exit or KeyboardInterrupt traceback) makes that re-raise a no-op,
    # so the process ends with status 0, and covers signals that arrive during startup.
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


def main() -> None:
    """Run the sandbox from the command line."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_settings(sys.argv[1:], os.environ)))


if __name__ == "__main__":
    main()
