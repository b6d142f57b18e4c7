"""Bearer tokens, each bound to one shop, checked before a request body is even read.

Tokens come from two places: ``ADMIN_HOOK_TOKENS`` (``shop_id:token`` pairs, for the dev
stack and tests) and the ``admin_tokens`` table, which keeps only each token's SHA-256
(production; ``python -m starter.http --issue-token SHOP`` makes one). Every comparison
of a secret is constant-time.

- No token, a malformed header or an unknown token: ``401 unauthorized``.
- A valid token on another shop's path: ``403 forbidden``, before the route runs, so no
  data of the other shop is ever read.

Only then is the body looked at (:func:`refuse_nul_characters`), and then parsed.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Header, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from activities.admin_store import AdminStore
from domain.errors import CancellationError, ErrorCode

# Longer than any token we issue (43 characters) by far; anything longer is garbage.
MAX_TOKEN_LENGTH: Final = 512
ACTOR_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@+:-]*$"
"""A merchant user as the store admin names it (``X-Actor``): an id or an e-mail."""
MAX_ACTOR_LENGTH: Final = 100

_BEARER = re.compile(r"^Bearer +([\x21-\x7e]+) *$", re.IGNORECASE)

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A shop's admin hook token (`ADMIN_HOOK_TOKENS`, or issued into the database).",
)


@dataclass(frozen=True)
class Principal:
    """Who calls: the token's shop, and the actor recorded in the audit trail."""

    shop_id: str
    actor: str


class Authenticator:
    """Finds the shop a bearer token belongs to."""

    def __init__(self, tokens: Mapping[str, str], store: AdminStore) -> None:
        self._tokens = [(token.encode(), shop) for token, shop in tokens.items()]
        self._store = store

    async def shop_for(self, authorization: str | None) -> str:
        """The token's shop; ``unauthorized`` without a known token.

        Raises:
            CancellationError: ``unauthorized``; ``database_unavailable`` when the token
                is not a configured one and the token table can't be read.
        """
        token = _bearer_token(authorization)
        shop: str | None = None
        # Compare with every configured token, so the time taken doesn't say which matched.
        for known, owner in self._tokens:
            if hmac.compare_digest(known, token.encode()):
                shop = owner
        if shop is None:
            shop = await self._store.shop_for_token(token)
        if shop is None:
            raise CancellationError(ErrorCode.UNAUTHORIZED, "the bearer token is not valid")
        return shop


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise CancellationError(
            ErrorCode.UNAUTHORIZED, "send the shop's token as `Authorization: Bearer <token>`"
        )
    match = _BEARER.match(authorization)
    if match is None or len(match.group(1)) > MAX_TOKEN_LENGTH:
        raise CancellationError(
            ErrorCode.UNAUTHORIZED, "the Authorization header must be `Bearer <token>`"
        )
    return match.group(1)


class ShopRoute(APIRoute):
    """A route under ``/v1/shops/{shop_id}``: the token must belong to that shop.

    The check wraps FastAPI's handler, so it runs before the body is parsed: a caller
    without a valid token learns nothing, not even whether its JSON was well formed.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authorized(request: Request) -> Response:
            authenticator: Authenticator = request.app.state.authenticator
            shop = await authenticator.shop_for(request.headers.get("authorization"))
            if not hmac.compare_digest(shop.encode(), _path_shop(request).encode()):
                raise CancellationError(
                    ErrorCode.FORBIDDEN, "this token belongs to another shop than the path's"
                )
            request.state.shop_id = shop
            refuse_nul_characters(await request.body())  # cached: FastAPI parses the same bytes
            return await handler(request)

        return authorized


def refuse_nul_characters(body: bytes) -> None:
    """Refuse JSON strings with NUL characters, which PostgreSQL text can't store.

    Caught here, at the edge, they are a ``validation_error``; past it they would fail a
    store activity and with it the whole run.
    """
    if b"\\u0000" not in body:  # the cheap test: JSON can only carry NUL escaped
        return
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return  # FastAPI answers malformed (or absurdly nested) JSON itself
    if _has_nul(document):
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, "text must not contain NUL characters (\\u0000)"
        )


def _has_nul(document: object) -> bool:
    # A loop, not recursion: JSON nested close to the parser's limit must not overflow here.
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _path_shop(request: Request) -> str:
    shop = request.path_params.get("shop_id")
    assert isinstance(shop, str), "ShopRoute paths start with /v1/shops/{shop_id}"
    return shop


def principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    x_actor: Annotated[
        str | None,
        Header(
            alias="X-Actor",
            min_length=1,
            max_length=MAX_ACTOR_LENGTH,
            pattern=ACTOR_PATTERN,
            description="The merchant user who acts (audit trail); default: the shop.",
        ),
    ] = None,
) -> Principal:
    """The caller: the shop :class:`ShopRoute` authenticated, and the acting merchant.

    The actor is ``merchant:<X-Actor>`` when the store admin names its user, otherwise
    ``merchant:<shop_id>``.
    """
    shop: str = request.state.shop_id
    return Principal(shop_id=shop, actor=f"merchant:{x_actor or shop}")


PrincipalDep = Annotated[Principal, Depends(principal)]
"""A route's caller parameter: the authenticated shop and the acting merchant."""
