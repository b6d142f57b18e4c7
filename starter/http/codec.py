"""The codec server the Temporal Web UI calls to show operators decrypted payloads.

``POST /codec/decode`` and ``POST /codec/encode`` take and answer Temporal's JSON form of
``{"payloads": [...]}``. Only operators may call them: a bearer token equal to
``CODEC_AUTH_TOKEN`` (what the Web UI sends when its own login passes the access token
on), or the same token as a path segment, ``/codec/<token>/decode``, for a UI that can't
send headers (the dev stack configures the UI that way). Browsers reach them from the
UI's origin through CORS (``CODEC_CORS_ORIGINS``).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from google.protobuf import json_format
from starlette.responses import JSONResponse
from temporalio.api.common.v1 import Payloads

from domain.errors import CancellationError, ErrorCode
from starter.codec import EncryptionCodec
from starter.http.context import Hook, hook
from starter.http.errors import error_responses

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


async def _payloads(request: Request) -> Payloads:
    try:
        body: Any = await request.json()
        if not isinstance(body, dict) or len(body.get("payloads") or []) > MAX_PAYLOADS:
            raise ValueError("expected {'payloads': [...]}")
        return json_format.ParseDict(body, Payloads(), ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as err:
        raise CancellationError(ErrorCode.VALIDATION_ERROR, f"not a payload list: {err}") from None


async def _run(request: Request, hook: Hook, path_token: str | None, encode: bool) -> JSONResponse:
    _authorize(hook, request, path_token)
    codec = _codec(hook)
    payloads = await _payloads(request)
    try:
        done = await (codec.encode if encode else codec.decode)(list(payloads.payloads))
    except (ValueError, KeyError) as err:
        # Unknown key id, or a payload tampered with: say which kind, not the bytes.
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, f"can't decode: {type(err).__name__}"
        ) from None
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=done)))


HookDep = Annotated[Hook, Depends(hook)]


CODEC_ERRORS = error_responses(401, 422)


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
