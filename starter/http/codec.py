"""The codec server the Temporal Web UI calls to show operators decrypted payloads.

``POST /codec/decode`` and ``POST /codec/encode`` take and answer Temporal's JSON form of
``{"payloads": [...]}``. Only operators may call them: a bearer token equal to
``CODEC_AUTH_TOKEN`` (what the Web UI sends when its own login passes the access token
on), or the same token as a path segment, ``/codec/<token>/decode``, for a UI that can't
send headers (the dev stack configures the UI that way). Browsers reach them from the
UI's origin through CORS (``CODEC_CORS_ORIGINS``).

A body that is not a payload list, or a payload that can't be decrypted (changed, cut, or
sealed with a key we don't hold), answers ``400 invalid_payloads``. The path token is kept
out of every log line (:func:`starter.http.errors.install_log_redaction`).
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format
from starlette.responses import JSONResponse
from temporalio.api.common.v1 import Payloads

from domain.errors import CancellationError, ErrorCode
from starter.codec import EncryptionCodec, UndecryptablePayloadError
from starter.http.context import Hook, HookDep
from starter.http.errors import RouteErrorCode, error_response, error_responses

router = APIRouter(tags=["operations"])

# Large histories decode in pages; a single request beyond this is not from the UI.
MAX_PAYLOADS = 1000


def _codec(hook: Hook) -> EncryptionCodec:
    key = hook.settings.payload_encryption_key
    if not key or not hook.settings.codec_auth_token:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR,
            "the codec is off: set PAYLOAD_ENCRYPTION_KEY and CODEC_AUTH_TOKEN",
        )
    return EncryptionCodec.from_setting(key)


def _authorize(hook: Hook, request: Request, path_token: str | None) -> None:
    expected = (hook.settings.codec_auth_token or "").encode()
    header = request.headers.get("authorization", "")
    given = path_token or (header[7:].strip() if header.lower().startswith("bearer ") else "")
    if not expected or not given or not hmac.compare_digest(given.encode(), expected):
        raise CancellationError(ErrorCode.UNAUTHORIZED, "an operator's codec token is required")


class InvalidPayloadsError(Exception):
    """The body is not Temporal's payload list, or a payload in it can't be decrypted."""


async def _payloads(request: Request) -> Payloads:
    try:
        body: Any = await request.json()
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past any use
        raise InvalidPayloadsError("the body is not JSON") from None
    payloads = body.get("payloads") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(payloads, list | None):
        raise InvalidPayloadsError('expected {"payloads": [...]}')
    if len(payloads or []) > MAX_PAYLOADS:
        raise InvalidPayloadsError(f"at most {MAX_PAYLOADS} payloads per request")
    try:
        return json_format.ParseDict(body, Payloads(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError):
        # The parser's message may quote the input (clear text, for encode): not echoed.
        raise InvalidPayloadsError(
            'not a payload list: each payload is {"metadata": {name: base64}, "data": base64}'
        ) from None


async def _run(request: Request, hook: Hook, path_token: str | None, encode: bool) -> JSONResponse:
    _authorize(hook, request, path_token)
    codec = _codec(hook)
    try:
        payloads = await _payloads(request)
        done = await (codec.encode if encode else codec.decode)(list(payloads.payloads))
    except (InvalidPayloadsError, UndecryptablePayloadError) as err:
        return error_response(RouteErrorCode.INVALID_PAYLOADS, str(err), status=400)
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=done)))


CODEC_ERRORS = error_responses(400, 401, 422)


@router.post(
    "/codec/decode",
    responses=CODEC_ERRORS,
    summary="Decrypt payloads for the Web UI (operators only)",
)
async def decode(request: Request, hook: HookDep) -> JSONResponse:
    """Decrypt (bearer token)."""
    return await _run(request, hook, None, encode=False)


@router.post(
    "/codec/encode",
    responses=CODEC_ERRORS,
    summary="Encrypt payloads for the Web UI (operators only)",
)
async def encode(request: Request, hook: HookDep) -> JSONResponse:
    """Encrypt (bearer token)."""
    return await _run(request, hook, None, encode=True)


@router.post("/codec/{token}/decode", include_in_schema=False)
async def decode_with_path_token(request: Request, token: str, hook: HookDep) -> JSONResponse:
    """Decrypt (token in the path, for UIs that can't send headers)."""
    return await _run(request, hook, token, encode=False)


@router.post("/codec/{token}/encode", include_in_schema=False)
async def encode_with_path_token(request: Request, token: str, hook: HookDep) -> JSONResponse:
    """Encrypt (token in the path)."""
    return await _run(request, hook, token, encode=True)
