"""Run the admin hook: build its client and app from the settings, serve with uvicorn."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from activities.admin_store import AdminStore
from activities.database import apply_migrations, create_pool
from starter.client import CancellationClient, connect_temporal
from starter.config import Settings
from starter.http.app import create_app
from starter.http.errors import install_log_redaction
from starter.http.params import IDENTIFIER

# Long enough that guessing is hopeless (256 bits), short enough to paste.
TOKEN_BYTES = 32

LOOPBACK = "127.0.0.1"
"""The hook listens here unless told otherwise (``--host``): loopback, behind a proxy."""


@asynccontextmanager
async def open_hook(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its Temporal client and database pool; both closed on exit.

    The database must answer at start (migrations are applied); Temporal need not: the
    client connects lazily, answers ``503 temporal_unavailable`` until it can, and
    ``/healthz`` says so.
    """
    database_url = settings.require_database()
    await apply_migrations(database_url)
    lazy = settings.model_copy(
        update={"temporal_connect": {**settings.temporal_connect, "lazy": True}}
    )
    temporal = await connect_temporal(lazy)
    pool = await create_pool(database_url)
    client = CancellationClient.over(temporal, pool, settings)
    try:
        yield create_app(client, settings, AdminStore(pool))
    finally:
        await client.close()


async def serve(settings: Settings, *, host: str = LOOPBACK) -> None:
    """Serve the hook on ``host``:``ADMIN_HOOK_PORT`` until SIGINT or SIGTERM.

    The access log has the method, path and status of each request, never a body.
    """
    install_log_redaction()  # create_app does too; before uvicorn logs anything, to be sure
    async with open_hook(settings) as app:
        config = uvicorn.Config(
            app,
            host=host,
            port=settings.admin_hook_port,
            access_log=True,
            server_header=False,
            # Behind a proxy, configure it there; client addresses are only logged.
            proxy_headers=False,
        )
        await uvicorn.Server(config).serve()


class InvalidShopIdError(ValueError):
    """A token was asked for something that is not a shop id."""


async def issue_token(settings: Settings, shop_id: str) -> str:
    """Make a new token for ``shop_id``; only its hash is stored, so print it now.

    Raises:
        InvalidShopIdError: ``shop_id`` is not an id the API accepts.
        ConfigError: ``DATABASE_URL`` is not set.
    """
    if not re.fullmatch(IDENTIFIER, shop_id) or len(shop_id) > 64:
        raise InvalidShopIdError(f"not a shop id: {shop_id!r}")
    database_url = settings.require_database()
    await apply_migrations(database_url)
    pool = await create_pool(database_url)
    try:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        await AdminStore(pool).add_token(shop_id, token)
        return token
    finally:
        await pool.close()
