"""The merchant's admin pages at ``/admin``: the store-admin guide's cancellation screens.

Server-rendered HTML (Jinja2, autoescaped) over the same
:class:`~starter.client.CancellationClient` the JSON routes use; every form works
without JavaScript (post, redirect, get). A merchant signs in with the shop's token and a
name; a signed session cookie then carries the shop, the name (the audit trail's actor)
and the CSRF token every form must send back (:mod:`.session`).

- :mod:`.pages`: sign-in, the Cancellations list, rendering, and
  :class:`~.pages.PageRoute`, which checks the session and the CSRF token before any page
  runs; :mod:`.cancellation_pages` (one cancellation and its actions) and
  :mod:`.shop_pages` (Order details, Settings, Sold out) add their routes to it;
- :mod:`.forms`: form fields into the domain's requests;
- :mod:`.words`: error codes as sentences, labels in the guide's words;
- ``templates/`` and ``static/``: the HTML and the one stylesheet and script, served by
  the hook itself (no CDN).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from starter.config import Settings
from starter.http.admin import cancellation_pages, shop_pages  # noqa: F401 (their routes join pages.router)
from starter.http.admin.pages import Admin, public, router

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the admin pages and their assets on ``app`` under ``/admin``."""
    app.state.admin = Admin.from_settings(settings)
    app.include_router(public)
    app.include_router(router)
    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")
