"""The merchant's session: a signed cookie, and the CSRF token bound to it.

A session is ``base64url(json) "." base64url(HMAC-SHA256(key, json))``: who signed in (the
shop the token belongs to and the name the merchant gave), a CSRF token, and when it
expires. Nothing secret is in it (the shop token is checked once, at sign-in, and never
stored), so signing is enough; the key comes from ``ADMIN_SESSION_KEY``.

Forms carry the session's CSRF token in a hidden field; a POST without the same token is
refused before it does anything. The sign-in form, before any session exists, carries the
token of a short-lived signed pre-session cookie instead (login CSRF).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Final

from starter.config import ConfigError
from starter.http.auth import ACTOR_PATTERN, MAX_ACTOR_LENGTH

log = logging.getLogger("starter.http.admin")

SESSION_COOKIE: Final = "admin_session"
SIGN_IN_COOKIE: Final = "admin_sign_in"
COOKIE_PATH: Final = "/admin"
# A working day: long enough not to interrupt a shift, short enough that a forgotten browser
# (or a revoked token: the cookie does not hold it) stops working by the next morning.
SESSION_SECONDS: Final = 8 * 3600
# The sign-in form's own token only has to last while the merchant types the token.
SIGN_IN_SECONDS: Final = 30 * 60
# A key shorter than this is a typo or a placeholder; 32 bytes is what `secrets` makes.
MIN_KEY_LENGTH: Final = 32
_NAME = re.compile(ACTOR_PATTERN)


class BadSession(Exception):
    """A cookie that is missing, malformed, forged or expired: sign in again."""


@dataclass(frozen=True)
class Session:
    """A signed-in merchant of one shop."""

    shop_id: str
    name: str
    csrf: str
    expires: int

    @property
    def actor(self) -> str:
        """Who acts in the audit trail: ``merchant:<name>``, as ``X-Actor`` names users."""
        return f"merchant:{self.name}"


def valid_name(name: str) -> bool:
    """Whether ``name`` can be an actor: 1–100 letters, digits and ``_.@+:-``."""
    # fullmatch: `$` alone would let a trailing newline through (log lines, audit trail).
    return 0 < len(name) <= MAX_ACTOR_LENGTH and _NAME.fullmatch(name) is not None


class SessionSigner:
    """Signs and checks session and sign-in cookies with one key."""

    def __init__(self, key: str | None) -> None:
        if key is None:
            log.warning(
                "ADMIN_SESSION_KEY is not set: the admin pages sign sessions with a random key"
                " of this process, so merchants must sign in again after a restart and"
                " sessions don't work across several hook processes"
            )
            key = secrets.token_urlsafe(32)
        elif len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"ADMIN_SESSION_KEY must be at least {MIN_KEY_LENGTH} characters")
        self._key = hashlib.sha256(b"admin-session\x00" + key.encode()).digest()

    def new_session(self, shop_id: str, name: str, *, now: float | None = None) -> str:
        """A cookie value for a fresh session (a new CSRF token every sign-in)."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        payload = {"kind": "session", "shop": shop_id, "name": name, "exp": expires}
        return self._sign(payload | {"csrf": secrets.token_urlsafe(24)})

    def session(self, cookie: str | None, *, now: float | None = None) -> Session:
        """The session a cookie holds.

        Raises:
            BadSession: No cookie, a forged or malformed one, or an expired one.
        """
        payload = self._verify(cookie, "session", now)
        shop, name, csrf = payload.get("shop"), payload.get("name"), payload.get("csrf")
        expires = payload.get("exp")
        if not (isinstance(shop, str) and isinstance(name, str) and isinstance(csrf, str)):
            raise BadSession("malformed session")
        assert isinstance(expires, int), "checked by _verify"
        return Session(shop_id=shop, name=name, csrf=csrf, expires=expires)

    def new_sign_in(self) -> tuple[str, str]:
        """``(cookie, csrf)`` for the sign-in form."""
        csrf = secrets.token_urlsafe(24)
        expires = int(time.time() + SIGN_IN_SECONDS)
        return self._sign({"kind": "sign_in", "csrf": csrf, "exp": expires}), csrf

    def sign_in_csrf(self, cookie: str | None) -> str:
        """The CSRF token the sign-in cookie vouches for.

        Raises:
            BadSession: No valid sign-in cookie.
        """
        csrf = self._verify(cookie, "sign_in", None).get("csrf")
        if not isinstance(csrf, str):
            raise BadSession("malformed sign-in cookie")
        return csrf

    def _sign(self, payload: dict[str, object]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()

    def _verify(self, cookie: str | None, kind: str, now: float | None) -> dict[str, object]:
        if not cookie or len(cookie) > 4096:
            raise BadSession("no session")
        body, dot, mac = cookie.partition(".")
        try:
            given = _unb64(mac)
            if not dot or not hmac.compare_digest(given, self._mac(body)):
                raise BadSession("bad signature")
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeError):  # binascii.Error and JSONDecodeError are ValueErrors
            raise BadSession("malformed session") from None
        if not isinstance(payload, dict) or payload.get("kind") != kind:
            raise BadSession("not a session of this kind")
        expires = payload.get("exp")
        if not isinstance(expires, int) or expires <= (now or time.time()):
            raise BadSession("expired")
        return payload


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a form's CSRF token with the session's."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
