"""The codec endpoints the Web UI calls: bad input answers ``400``, and the operators' token,
sent as a path segment, never reaches a log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from starlette.requests import Request
from temporalio.api.common.v1 import Payload, Payloads

from starter.codec import KEY_ID, EncryptionCodec, new_key
from starter.http import errors
from tests.http.conftest import bearer_client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CLEAR = Payload(metadata={"encoding": b"json/plain"}, data=b'{"reason":"moved to Jeju"}')


def _body(*payloads: Payload) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=list(payloads)))


def _assert_invalid_payloads(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(answer.json()) == {"error"}
    assert error["code"] == "invalid_payloads"
    assert error["message"]


@pytest_asyncio.fixture(loop_scope="session")
async def operator(codec_hook) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's client: the codec token as a bearer header."""
    async with bearer_client(codec_hook.url, codec_hook.token, timeout=30) as http:
        yield http


async def _sealed(operator: httpx.AsyncClient) -> Payload:
    """A payload the hook itself encrypted."""
    answer = await operator.post("/codec/encode", json=_body(CLEAR))
    assert answer.status_code == 200, answer.text
    (sealed,) = json_format.ParseDict(answer.json(), Payloads()).payloads
    return sealed


MALFORMED_BODIES = {
    "not-json": b"payloads please",
    "not-utf8": b'{"payloads": ["\xff\xfe"]}',
    "a-list": b"[]",
    "a-string": b'"payloads"',
    "payloads-a-number": b'{"payloads": 5}',
    "payloads-an-object": b'{"payloads": {"data": "AA=="}}',
    "payload-a-number": b'{"payloads": [1]}',
    "data-an-object": b'{"payloads": [{"data": {"x": 1}}]}',
    "metadata-a-string": b'{"payloads": [{"metadata": "x"}]}',
    "nested-past-any-parser": b"[" * 100_000 + b"]" * 100_000,
    "too-many-payloads": b'{"payloads": [' + b",".join([b"{}"] * 1001) + b"]}",
}


@pytest.mark.parametrize("operation", ["decode", "encode"])
@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_a_body_that_is_no_payload_list_is_400(operator, operation, body):
    answer = await operator.post(
        f"/codec/{operation}", content=body, headers={"Content-Type": "application/json"}
    )
    _assert_invalid_payloads(answer)


def _flip_last_byte(p: Payload) -> Payload:
    return Payload(metadata=dict(p.metadata), data=p.data[:-1] + bytes([p.data[-1] ^ 1]))


def _cut(p: Payload) -> Payload:
    return Payload(metadata=dict(p.metadata), data=p.data[:5])


def _unknown_key(p: Payload) -> Payload:
    return Payload(metadata={**p.metadata, KEY_ID: b"k9"}, data=p.data)


def _key_id_not_text(p: Payload) -> Payload:
    return Payload(metadata={**p.metadata, KEY_ID: b"\xff\xfe"}, data=p.data)


async def _another_key_same_id(p: Payload) -> Payload:
    (sealed,) = await EncryptionCodec.from_setting(f"k1:{new_key()}").encode([CLEAR])
    return sealed


@pytest.mark.parametrize(
    "tamper", [_flip_last_byte, _cut, _unknown_key, _key_id_not_text, _another_key_same_id]
)
async def test_a_payload_that_cant_be_decrypted_is_400(operator, tamper):
    """Tampered, cut or foreign ciphertext is the caller's input, not our bug."""
    sealed = await _sealed(operator)
    bad = tamper(sealed)
    if not isinstance(bad, Payload):
        bad = await bad
    answer = await operator.post("/codec/decode", json=_body(sealed, bad))
    _assert_invalid_payloads(answer)
    # The untouched payload still decodes.
    good = await operator.post("/codec/decode", json=_body(sealed))
    assert good.status_code == 200, good.text
    assert json_format.ParseDict(good.json(), Payloads()).payloads[0] == CLEAR


async def test_the_path_token_never_reaches_a_log_line(codec_hook, caplog):
    """Successes, refusals and unknown routes under ``/codec/<token>/…``, with every logger
    captured: the access log shows ``/codec/***/…``, and no line holds the token."""
    # The test's own client logs the URLs it calls; only the hook's side is under test.
    # (Last, the root level: set_level also sets the capturing handler's level.)
    caplog.set_level(logging.WARNING, logger="httpx")
    caplog.set_level(logging.WARNING, logger="httpcore")
    caplog.set_level(logging.DEBUG)
    token = codec_hook.token
    async with httpx.AsyncClient(base_url=codec_hook.url, trust_env=False, timeout=30) as http:
        encoded = await http.post(f"/codec/{token}/encode", json=_body(CLEAR))
        assert encoded.status_code == 200, encoded.text
        (sealed,) = json_format.ParseDict(encoded.json(), Payloads()).payloads
        decoded = await http.post(f"/codec/{token}/decode", json=_body(sealed))
        assert decoded.status_code == 200, decoded.text
        _assert_invalid_payloads(
            await http.post(f"/codec/{token}/decode", json=_body(_flip_last_byte(sealed)))
        )
        _assert_invalid_payloads(await http.post(f"/codec/{token}/decode", content=b"{"))
        wrong_method = await http.get(f"/codec/{token}/decode")
        assert wrong_method.status_code == 405
        no_route = await http.post(f"/codec/{token}/decrypt", json=_body(sealed))
        assert no_route.status_code == 404
        for answer in (wrong_method, no_route):
            assert token not in answer.text

    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert sum("/codec/***/" in line for line in access) >= 6, access
    assert token not in caplog.text
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in str(record.args)


async def test_the_bug_handler_logs_no_codec_token(caplog, monkeypatch):
    """The handler of unexpected failures redacts the path itself, even on a logger
    without the redacting filter."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(logging.getLogger("starter.http"), "filters", [])
    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/codec/s3cret-operator-token/decode",
            "raw_path": b"/codec/s3cret-operator-token/decode",
            "query_string": b"",
            "headers": [],
        }
    )
    answer = await errors._on_bug(request, KeyError("boom"))
    assert answer.status_code == 500
    assert "s3cret-operator-token" not in caplog.text
    assert "POST /codec/***/decode failed: KeyError" in caplog.text
