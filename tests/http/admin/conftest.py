"""The merchant's admin pages under test: a signed-in merchant over plain HTTP, and chromium.

The hook is the session's :func:`hook_stack` (tests/http/conftest.py). Its session cookie is
``Secure``, as outside the dev stack; httpx would not send it back over ``http://``, so
:class:`Merchant` carries its cookies by hand. Chromium treats loopback as a secure context
and keeps them itself.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="key" value="([^"]+)"')


def chromium_path() -> str:
    """Debian's chromium (``scripts/bootstrap`` installs it on CI); never a downloaded one."""
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if found is None:
        pytest.fail(
            "chromium is not installed: run scripts/bootstrap as root (apt-get install chromium)"
        )
    return found


class Merchant:
    """A merchant signed in to the admin pages over HTTP, cookies carried by hand."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def _keep(self, answer: httpx.Response) -> None:
        for header in answer.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(header)
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _headers(self) -> dict[str, str]:
        return (
            {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
            if self.cookies
            else {}
        )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        # Only when given: httpx replaces a query already in ``path`` with ``params``.
        answer = await self.http.get(path, params=params or None, headers=self._headers())
        self._keep(answer)
        return answer

    async def post(
        self, path: str, data: dict[str, str], *, csrf: str | None = "page"
    ) -> httpx.Response:
        """POST a form; ``csrf="page"`` sends the token of the session (read from a page)."""
        if csrf == "page":
            csrf = await self.csrf()
        body = dict(data) if csrf is None else {"csrf_token": csrf, **data}
        answer = await self.http.post(path, data=body, headers=self._headers())
        self._keep(answer)
        return answer

    async def csrf(self) -> str:
        page = await self.get("/admin/settings")
        match = CSRF.search(page.text)
        assert match, page.text
        return html.unescape(match.group(1))

    async def sign_in(self, token: str, name: str) -> httpx.Response:
        form = await self.get("/admin/sign-in")
        match = CSRF.search(form.text)
        assert match, form.text
        return await self.post(
            "/admin/sign-in", {"token": token, "name": name}, csrf=html.unescape(match.group(1))
        )


@pytest_asyncio.fixture(loop_scope="session")
async def merchant_client(hook_stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hook_stack.url, trust_env=False, timeout=60) as http:
        yield http


@pytest.fixture
def new_merchant(merchant_client) -> Callable[[], Merchant]:
    """Make merchants who have not signed in yet."""
    return lambda: Merchant(merchant_client)


@pytest_asyncio.fixture(loop_scope="session")
async def merchant(shop, merchant_client) -> Merchant:
    """A merchant of :func:`shop`, signed in as ``ana``."""
    signed = Merchant(merchant_client)
    answer = await signed.sign_in(shop.token, "ana")
    assert answer.status_code == 303, answer.text
    return signed


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One chromium for the module: headless, without the sandbox (CI runs as root)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()
