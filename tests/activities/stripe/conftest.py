"""localstripe as a real process for the Stripe adapter's tests, and a client pointed at it.

localstripe (GPL-3.0) is never imported: :mod:`starter.localstripe` runs it as its own
process on a free loopback port, once per session, with an empty store.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from activities.stripe_provider import StripeProviderClient
from starter import localstripe, ports

# localstripe has nothing to flush; SIGTERM ends it at once.
STOP_TIMEOUT_SECONDS = 10.0


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """``STRIPE_API_BASE`` of a localstripe process started for this session."""
    work_dir = Path(tempfile.mkdtemp(prefix="test-localstripe-"))
    port = ports.free_port()
    process = localstripe.start(port, work_dir / "localstripe.log")
    try:
        yield localstripe.api_base(port)
    finally:
        _stop(process)
        shutil.rmtree(work_dir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest_asyncio.fixture(loop_scope="session")
async def stripe_client(localstripe_url: str) -> AsyncIterator[StripeProviderClient]:
    """The adapter over localstripe (a fresh connection pool per test)."""
    client = StripeProviderClient(localstripe.LOCALSTRIPE_API_KEY, api_base=localstripe_url)
    try:
        yield client
    finally:
        await client.aclose()
