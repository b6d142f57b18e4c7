"""What every route needs, built once by :func:`~starter.http.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from activities.admin_store import AdminStore
from starter.client import CancellationClient
from starter.config import Settings
from starter.http.auth import Authenticator


@dataclass(frozen=True)
class Hook:
    """The client the routes are a thin layer over, plus the hook's own store and settings."""

    client: CancellationClient
    settings: Settings
    admin_store: AdminStore
    authenticator: Authenticator


def hook(request: Request) -> Hook:
    """The app's :class:`Hook` (a FastAPI dependency)."""
    context: Hook = request.app.state.hook
    return context


HookDep = Annotated[Hook, Depends(hook)]
"""A route's or dependency's :class:`Hook` parameter."""
