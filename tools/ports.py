"""Loopback ports for the embedded stack and the tests: find a free one, wait until one answers.

Nothing here assumes a fixed port is free: the dev stack and the tests ask the kernel for one and
then wait until the process they started listens on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import httpx

LOOPBACK = "127.0.0.1"

# How often the wait helpers retry; short, because a local server is usually up within a second.
_POLL_INTERVAL_SECONDS = 0.05


class PortWaitTimeoutError(TimeoutError):
    """Raised when a port or URL did not answer within the time allowed."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now.

    The kernel picks the port; the socket is closed again before returning, so another process
    could take it in between. That race is accepted: the caller starts its server at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


DEV_STACK_PORTS = frozenset({5433, 7233, 8000, 8001, 8233})
"""The dev stack's default ports: a developer's running stack may hold them."""


def free_port_off_dev_stack(taken: set[int] | None = None) -> int:
    """A free loopback port that is none of the dev stack's defaults, nor in ``taken``
    (which gets the port added), for tools that run their own stack beside a developer's."""
    while True:
        port = free_port()
        if port not in DEV_STACK_PORTS and (taken is None or port not in taken):
            if taken is not None:
                taken.add(port)
            return port


def port_is_open(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Args:
        host: Address to connect to.
        port: Port to connect to.
        timeout: Seconds to wait in all.
        alive: Optional check that the server process still runs; when it returns False the wait
            stops at once instead of running into the timeout.

    Raises:
        PortWaitTimeoutError: Nothing listened in time.
        RuntimeError: ``alive`` reported that the process died.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port):
            return
        _check_alive(alive, f"{host}:{port}")
        if time.monotonic() >= deadline:
            raise PortWaitTimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")
        time.sleep(_POLL_INTERVAL_SECONDS)


async def wait_for_port_async(
    host: str,
    port: int,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Like :func:`wait_for_port`, without blocking the event loop.

    It waits for as long as it takes; bound it with ``asyncio.timeout()``.
    """
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
        except (OSError, TimeoutError):
            pass
        else:
            writer.close()
            await writer.wait_closed()
            return
        _check_alive(alive, f"{host}:{port}")
        await asyncio.sleep(_POLL_INTERVAL_SECONDS)


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until a GET of ``url`` answers with a 2xx status.

    Raises:
        PortWaitTimeoutError: No 2xx answer in time.
        RuntimeError: ``alive`` reported that the process died.
    """
    deadline = time.monotonic() + timeout
    last_problem = "no answer"
    while True:
        try:
            # An empty ProxyHandler: a loopback URL must never go through a proxy from the
            # environment (http_proxy and friends).
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=2.0) as response:
                status: int = response.status
                if 200 <= status < 300:
                    return
                last_problem = f"status {status}"
        except urllib.error.HTTPError as error:
            last_problem = f"status {error.code}"
        except (OSError, ValueError) as error:
            last_problem = str(error)
        _check_alive(alive, url)
        if time.monotonic() >= deadline:
            raise PortWaitTimeoutError(
                f"{url} did not answer within {timeout:.0f}s: {last_problem}"
            )
        time.sleep(_POLL_INTERVAL_SECONDS)


async def wait_for_http_async(
    url: str,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Like :func:`wait_for_http`, without blocking the event loop.

    It waits for as long as it takes; bound it with ``asyncio.timeout()``.
    """
    # trust_env=False: a loopback URL must never go through a proxy from the environment.
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(url)
                if response.is_success:
                    return
            _check_alive(alive, url)
            await asyncio.sleep(_POLL_INTERVAL_SECONDS)


def _check_alive(alive: Callable[[], bool] | None, what: str) -> None:
    if alive is not None and not alive():
        raise RuntimeError(f"the process that should serve {what} exited")
