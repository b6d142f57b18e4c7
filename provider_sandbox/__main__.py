"""Command line entry point: `python -m provider_sandbox --port 8001 --db sandbox.sqlite3`.

Each flag falls back to an environment variable, and this is the only module that reads the
environment. Prefer `PAYMENT_PROVIDER_WEBHOOK_SECRET` over `--webhook-secret`: command
lines are visible to every user of the machine.
"""

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from provider_sandbox.app import create_app

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


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Read the command line, falling back to `PAYMENT_PROVIDER_*` environment variables."""
    parser = argparse.ArgumentParser(
        prog="python -m provider_sandbox",
        description="Run the card payment provider sandbox over one SQLite file.",
    )
    parser.add_argument(
        "--host",
        default=env.get("PAYMENT_PROVIDER_HOST", DEFAULT_HOST),
        help=f"address to bind (PAYMENT_PROVIDER_HOST, default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        # A string default goes through `type` too, so a bad env value is a usage error.
        default=env.get("PAYMENT_PROVIDER_PORT", str(DEFAULT_PORT)),
        help=f"port; 0 picks a free one (PAYMENT_PROVIDER_PORT, default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=env.get("PAYMENT_PROVIDER_DB"),
        help="SQLite file holding all state; created when missing (PAYMENT_PROVIDER_DB)",
    )
    parser.add_argument(
        "--webhook-url",
        default=env.get("PAYMENT_PROVIDER_WEBHOOK_URL"),
        help="where refund.succeeded events go (PAYMENT_PROVIDER_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=env.get("PAYMENT_PROVIDER_WEBHOOK_SECRET"),
        help="HMAC key for X-Signature (PAYMENT_PROVIDER_WEBHOOK_SECRET; preferred)",
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
    )


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, announcing the address once the socket listens."""
    app = create_app(settings.db_path, settings.webhook_url, settings.webhook_secret)
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
