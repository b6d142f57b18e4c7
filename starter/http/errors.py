"""Every failure as the admin hook answers it: ``{"error": {"code", "message"}}``.

The one table from error code to HTTP status is :data:`HTTP_STATUS`. Everything that can
go wrong reaches the caller through it:

- the client's typed refusals (:class:`~domain.errors.CancellationError`);
- request validation (pydantic, malformed JSON, oversized bodies) → ``validation_error``;
- Temporal that does not answer (``RPCError``, a lazy client's failed connect) →
  ``temporal_unavailable``;
- the store database that does not answer or can't serve now (:data:`DATABASE_ERRORS`:
  lost connections, ``OSError``, a full disk and other exhausted resources, shutdowns,
  I/O errors, a read-only standby) → ``database_unavailable``; a value it can't store
  (``asyncpg.DataError``) → ``validation_error``;
- unknown routes and methods → ``not_found`` / ``method_not_allowed``.

Anything else is a bug: it answers ``500 internal_error`` without details, and the
traceback goes to the server log (never a request body).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

import asyncpg
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import CancellationError, ErrorCode
from starter import outages

log = logging.getLogger("starter.http")

HTTP_STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.ORDER_NOT_FOUND: 404,
    ErrorCode.CANCELLATION_NOT_FOUND: 404,
    ErrorCode.REFUND_NOT_FOUND: 404,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.ORDER_SHIPPED: 409,
    ErrorCode.CUSTOMER_REQUESTS_DISABLED: 409,
    ErrorCode.INVALID_TRANSITION: 409,
    ErrorCode.UNDO_WINDOW_CLOSED: 409,
    ErrorCode.OUT_OF_STOCK: 409,
    ErrorCode.RECAPTURE_UNAVAILABLE: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.TEMPORAL_UNAVAILABLE: 503,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.PROVIDER_UNAVAILABLE: 503,
    ErrorCode.PAYMENT_MISMATCH: 422,
    ErrorCode.ORDER_LOCKED: 409,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.WEBHOOK_NOT_FOUND: 404,
    ErrorCode.DELIVERY_NOT_FOUND: 404,
    ErrorCode.BULK_CANCELLATION_NOT_FOUND: 404,
}
"""The one mapping from error code to HTTP status."""

# A caller that got 503 should come back soon; the outages we expect are restarts.
RETRY_AFTER_SECONDS = 5
# Messages name at most this many invalid fields; the rest is noise for a person.
MAX_REPORTED_FIELDS = 3


class RouteErrorCode(StrEnum):
    """Codes of the HTTP layer itself, outside the domain's :class:`ErrorCode`."""

    NOT_FOUND = "not_found"
    """No route has this path (a missing order or cancellation has its own code)."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """The path exists, but not with this method."""
    INTERNAL_ERROR = "internal_error"
    """A bug: the server log has the details."""
    INVALID_PAYLOADS = "invalid_payloads"
    """The codec endpoints got no Temporal payload list, or a payload they can't decrypt
    (``400``, as codec servers answer the Web UI)."""


class ErrorDetail(BaseModel):
    """What went wrong, for machines (``code``) and for people (``message``)."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode | RouteErrorCode
    message: str


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "`invalid_payloads`: not a payload list, or a payload that can't be decrypted",
    401: "`unauthorized`: no bearer token, or one we don't know",
    403: "`forbidden`: the token belongs to another shop",
    404: (
        "`order_not_found`, `cancellation_not_found`, `refund_not_found`,"
        " `webhook_not_found`, `delivery_not_found` or `bulk_cancellation_not_found`"
    ),
    409: (
        "`order_shipped`, `customer_requests_disabled`, `invalid_transition`,"
        " `undo_window_closed`, `out_of_stock` or `recapture_unavailable`"
    ),
    422: "`validation_error` (malformed or inconsistent input) or `idempotency_key_reused`",
    503: "`temporal_unavailable` or `database_unavailable`; retry after a few seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses, each with :class:`ErrorResponse`."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }


def error_response(
    code: ErrorCode | RouteErrorCode, message: str, *, status: int | None = None
) -> JSONResponse:
    """The answer for one error; the status comes from :data:`HTTP_STATUS` unless given."""
    if status is None:
        status = HTTP_STATUS[code] if isinstance(code, ErrorCode) else 500
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def validation_message(errors: Iterable[Mapping[str, Any]]) -> str:
    """A readable summary of pydantic errors naming each field; never the input itself."""
    parts: list[str] = []
    errors = list(errors)
    for error in errors[:MAX_REPORTED_FIELDS]:
        if error.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        parts.append(f"{_field(error.get('loc', ()))}: {error.get('msg', 'invalid')}")
    if len(errors) > MAX_REPORTED_FIELDS:
        parts.append(f"and {len(errors) - MAX_REPORTED_FIELDS} more")
    return "; ".join(parts) or "the request is not valid"


def _field(loc: Sequence[Any]) -> str:
    if not loc:
        return "body"
    where, *rest = (str(part) for part in loc)
    if where == "body":
        return ".".join(rest) if rest else "body"
    if where in ("path", "query", "header"):
        return f"{where} parameter {'.'.join(rest)}"
    return ".".join([where, *rest])


def as_cancellation_error(exc: BaseException) -> CancellationError | None:
    """The typed error for a known failure of Temporal or the database; ``None`` otherwise."""
    if isinstance(exc, CancellationError):
        return exc
    if isinstance(exc, RPCError):
        if exc.status is RPCStatusCode.NOT_FOUND:
            return CancellationError(ErrorCode.CANCELLATION_NOT_FOUND, exc.message)
        return CancellationError(
            ErrorCode.TEMPORAL_UNAVAILABLE, f"Temporal does not answer: {exc.message}"
        )
    if isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect"):
        # A lazily connected client (the hook starts before Temporal may be up) raises
        # this from the SDK's bridge until the server answers.
        return CancellationError(ErrorCode.TEMPORAL_UNAVAILABLE, "Temporal does not answer")
    if isinstance(exc, DATABASE_ERRORS):
        return CancellationError(
            ErrorCode.DATABASE_UNAVAILABLE,
            "the store database can't serve requests right now; try again soon",
        )
    return None


DATABASE_ERRORS: Final = outages.DATABASE_OUTAGES
"""Exceptions that mean the store database does not answer or can't serve now (not that a
query or a value is wrong): each answers ``503 database_unavailable``. The classes are listed,
with why, in :data:`starter.outages.DATABASE_OUTAGES`, which the CLI shares."""


async def _on_cancellation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CancellationError)
    return error_response(exc.code, exc.message)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # exc.body holds the raw request (bank account numbers included): never echoed or logged.
    return error_response(ErrorCode.VALIDATION_ERROR, validation_message(exc.errors()))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    match exc.status_code:
        case 404:
            return error_response(
                RouteErrorCode.NOT_FOUND, f"no route {redact_path(request.url.path)}", status=404
            )
        case 405:
            return error_response(
                RouteErrorCode.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on {redact_path(request.url.path)}",
                status=405,
            )
        case 413:
            return error_response(
                ErrorCode.VALIDATION_ERROR,
                f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB",
            )
        case 400:
            return error_response(ErrorCode.VALIDATION_ERROR, "the request body can't be read")
        case _:
            return error_response(
                ErrorCode.VALIDATION_ERROR
                if exc.status_code < 500
                else RouteErrorCode.INTERNAL_ERROR,
                str(exc.detail),
                status=exc.status_code,
            )


async def _on_unstorable_value(request: Request, exc: Exception) -> Response:
    # Input that passed validation but that PostgreSQL can't take (a date beyond its range,
    # say): the caller's data, not our bug. The message names no value.
    log.info(
        "%s %s: value refused by the database (%s)",
        request.method,
        redact_path(request.url.path),
        type(exc).__name__,
    )
    return error_response(
        ErrorCode.VALIDATION_ERROR, "a value in the request is out of the range the store accepts"
    )


async def _on_infrastructure_error(request: Request, exc: Exception) -> Response:
    error = as_cancellation_error(exc)
    if error is None:
        return await _on_bug(request, exc)
    log.warning(
        "%s %s: %s (%s)",
        request.method,
        redact_path(request.url.path),
        error.code,
        type(exc).__name__,
    )
    return error_response(error.code, error.message)


async def _on_bug(request: Request, exc: Exception) -> Response:
    log.error(
        "%s %s failed: %s",
        request.method,
        redact_path(request.url.path),
        type(exc).__name__,
        exc_info=exc,
    )
    return error_response(
        RouteErrorCode.INTERNAL_ERROR, "something went wrong on our side; it is logged", status=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure with the error body and the status of :data:`HTTP_STATUS`."""
    app.add_exception_handler(CancellationError, _on_cancellation_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    for infrastructure in (RPCError, RuntimeError, *DATABASE_ERRORS):
        app.add_exception_handler(infrastructure, _on_infrastructure_error)
    app.add_exception_handler(asyncpg.DataError, _on_unstorable_value)
    app.add_exception_handler(Exception, _on_bug)


# ---------------------------------------------------------------------- codec token in logs

# ``/codec/<token>/decode``: the segment after ``/codec/`` is the operator's token unless it
# is the last one and names the operation (``/codec/decode`` sends the token as a header).
_CODEC_PATH_TOKEN: Final = re.compile(
    r"(/codec/)(?:[^/?#\s\"]+(?=/)|(?!(?:en|de)code(?![^/?#\s\"]))[^/?#\s\"]+)",
    re.IGNORECASE,
)
REDACTED: Final = "***"

LOGGERS_WITH_PATHS: Final = ("uvicorn.access", "uvicorn.error", "starter.http")
"""The loggers whose lines may carry a request path: the access log, uvicorn's own, ours."""


def redact_path(text: str) -> str:
    """``text`` with the codec token of every ``/codec/<token>/…`` path replaced by ``***``."""
    return _CODEC_PATH_TOKEN.sub(rf"\g<1>{REDACTED}", text)


class RedactCodecToken(logging.Filter):
    """The codec's path token never reaches a log line: redacted in the message and in every
    string argument (the access log's formatter reads its arguments one by one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_path(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_path(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {
                k: redact_path(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install_log_redaction() -> None:
    """Put :class:`RedactCodecToken` on every logger of :data:`LOGGERS_WITH_PATHS`, once.

    Filters on these loggers survive uvicorn's own logging setup, which replaces their
    handlers but keeps their filters.
    """
    for name in LOGGERS_WITH_PATHS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCodecToken) for f in logger.filters):
            logger.addFilter(RedactCodecToken())


# ---------------------------------------------------------------------- request size

MAX_BODY_BYTES: Final = 256 * 1024
"""The largest request body: an order of 500 items is about 60 KiB."""


class BodyLimitMiddleware:
    """Refuse request bodies over :data:`MAX_BODY_BYTES` before anything reads them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = error_response(
                ErrorCode.VALIDATION_ERROR,
                f"the request body is larger than {self.max_bytes // 1024} KiB",
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPExceptions from body reading on to the handlers.
                    raise StarletteHTTPException(413)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
