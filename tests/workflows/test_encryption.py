"""Encrypted payloads: Temporal stores ciphertext; the codec (and only it) reads it back."""

import base64
import json
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.admin_store import AdminStore
from domain.bank import BankAccount
from domain.cancellation import CancellationStatus
from domain.order import TenderKind
from domain.requests import AcceptRequest, ConfirmRefundRequest, StartRequest
from starter.codec import (
    EncryptionCodec,
    EncryptionKeyError,
    UndecryptablePayloadError,
    data_converter,
    new_key,
    parse_keys,
)
from starter.config import Settings
from starter.http.app import create_app
from workflows.order_cancellation import OrderCancellationWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

OLD_KEY, KEY = f"k1:{new_key()}", f"k2:{new_key()}"
SECRET_REASON = "customer moved to Jeju island"


def _payload_texts(history_json: dict[str, Any]) -> list[bytes]:
    """Every payload's bytes, but the SDK's marker bookkeeping (checked by ``_payloads``:
    timestamps and counters whose digits may spell anything)."""
    return [p.data for p in _payloads(history_json)]


# Markers carry the SDK's own bookkeeping in clear: a patch its name; a local activity
# these keys, next to its encrypted result.
LOCAL_ACTIVITY_MARKER_KEYS = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def _payloads(history_json: dict[str, Any]) -> list[Payload]:
    payloads: list[Payload] = []

    def walk(value):
        if isinstance(value, dict):
            marker = value.get("markerRecordedEventAttributes")
            if marker and marker.get("markerName") == "core_patch":
                # A version marker: the patch's name in clear, nothing else.
                (payload,) = marker["details"]["patch-data"]["payloads"]
                assert set(json.loads(base64.b64decode(payload["data"]))) == {"id", "deprecated"}
                return
            if marker and marker.get("markerName") == "core_local_activity":
                for payload in marker["details"]["data"]["payloads"]:
                    meta = json.loads(base64.b64decode(payload["data"]))
                    assert set(meta) <= LOCAL_ACTIVITY_MARKER_KEYS, meta
                value = {
                    **value,
                    "markerRecordedEventAttributes": {
                        **marker,
                        "details": {k: v for k, v in marker["details"].items() if k != "data"},
                    },
                }
            if "data" in value and "metadata" in value:
                payloads.append(
                    Payload(
                        metadata={k: base64.b64decode(v) for k, v in value["metadata"].items()},
                        data=base64.b64decode(value["data"]),
                    )
                )
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(history_json)
    return payloads


async def test_history_holds_no_personal_data_in_clear(make_harness, dev_env):
    encrypted = Client(**{**dev_env.client.config(), "data_converter": data_converter(KEY)})
    h = await make_harness(dev_env, encrypted)
    account = BankAccount(bank="Shinhan", account_number="110-123-456789", holder="Kim Minji")
    order_id = await h.order(tenders=[(TenderKind.BANK_TRANSFER, 30000)])
    view, _ = await h.client.start_cancellation(
        h.shop_id,
        order_id,
        StartRequest(
            initiated_by="merchant",
            channel="contact",
            reason=SECRET_REASON,
            accept=AcceptRequest(
                reason_code="customer_contact", reason=SECRET_REASON, bank_account=account
            ),
        ),
    )
    line = (await h.wait_for(view.cancellation_id, lambda v: v.refunds)).refunds[0]
    await h.client.confirm_refund(
        h.shop_id, order_id, line.refund_id, ConfirmRefundRequest(reference="TX-5")
    )
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)

    history = await h.handle(view.cancellation_id).fetch_history()
    raw = history.to_json_dict()
    clear = b"\n".join(_payload_texts(raw))
    for secret in (b"110-123-456789", b"Kim Minji", b"cust-1", SECRET_REASON.encode(), b"6789"):
        assert secret not in clear, secret
    # Search attributes stay readable (operators filter by them); every other payload is sealed.
    payloads = [p for p in _payloads(raw) if "type" not in p.metadata]
    clear_payloads = [p for p in payloads if p.metadata["encoding"] != b"binary/encrypted"]
    assert payloads and not clear_payloads
    assert {p.metadata["encryption-key-id"] for p in payloads} == {b"k2"}

    decoded = await EncryptionCodec.from_setting(KEY).decode(payloads)
    text = b"\n".join(p.data for p in decoded)
    assert SECRET_REASON.encode() in text and b"cust-1" in text
    assert b"110-123-456789" not in text  # never sent to Temporal at all

    # The encrypted history replays with the same converter; without the key it can't.
    replayer = Replayer(workflows=[OrderCancellationWorkflow], data_converter=data_converter(KEY))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    plain = Replayer(workflows=[OrderCancellationWorkflow], data_converter=pydantic_data_converter)
    result = await plain.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_rotated_keys_still_decrypt_old_payloads():
    old = EncryptionCodec.from_setting(OLD_KEY)
    sealed = await old.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
    rotated = EncryptionCodec.from_setting(f"{KEY},{OLD_KEY}")
    (back,) = await rotated.decode(sealed)
    assert back.data == b'"hi"'
    (fresh,) = await rotated.encode([back])
    assert fresh.metadata["encryption-key-id"] == b"k2"
    with pytest.raises(UndecryptablePayloadError, match="k1"):
        await EncryptionCodec.from_setting(KEY).decode(sealed)


@pytest.mark.parametrize("value", ["", "k:not-base64!", f"k:{base64.b64encode(b'short').decode()}"])
async def test_malformed_keys_are_refused_without_echoing_them(value):
    with pytest.raises(EncryptionKeyError) as info:
        parse_keys(value)
    assert "not-base64" not in str(info.value)


async def test_unencrypted_payloads_pass_through():
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"a": 1}).encode())
    assert await EncryptionCodec.from_setting(KEY).decode([payload]) == [payload]
    assert data_converter(None) is pydantic_data_converter


async def test_codec_endpoint_decodes_for_operators_only(make_harness, dev_env, pool):
    """The hook's codec endpoint decodes a real encrypted history for an authenticated caller,
    refuses anyone else, and lets the Web UI's origin call it (CORS)."""
    encrypted = Client(**{**dev_env.client.config(), "data_converter": data_converter(KEY)})
    h = await make_harness(dev_env, encrypted)
    order_id = await h.order()
    view, _ = await h.client.start_cancellation(
        h.shop_id,
        order_id,
        StartRequest(
            initiated_by="merchant",
            channel="admin",
            reason=SECRET_REASON,
            accept=AcceptRequest(reason_code="sold_out", reason=SECRET_REASON),
        ),
    )
    await h.wait_status(view.cancellation_id, CancellationStatus.CANCELED)
    raw = (await h.handle(view.cancellation_id).fetch_history()).to_json_dict()
    sealed = [p for p in _payloads(raw) if "type" not in p.metadata]
    body = json_format.MessageToDict(Payloads(payloads=sealed))

    settings = Settings(
        payload_encryption_key=KEY,
        codec_auth_token="operator-token",
        admin_hook_tokens={"t": h.shop_id},
    )
    app = create_app(h.client, settings, AdminStore(pool))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook") as http:
        refused = await http.post("/codec/decode", json=body)
        assert refused.status_code == 401
        assert (await http.post("/codec/wrong/decode", json=body)).status_code == 401
        shop_token = await http.post(
            "/codec/decode", json=body, headers={"Authorization": "Bearer t"}
        )
        assert shop_token.status_code == 401  # a shop's token is not an operator's

        decoded = await http.post(
            "/codec/decode", json=body, headers={"Authorization": "Bearer operator-token"}
        )
        assert decoded.status_code == 200, decoded.text
        clear = json_format.ParseDict(decoded.json(), Payloads())
        assert any(SECRET_REASON.encode() in p.data for p in clear.payloads)
        by_path = await http.post("/codec/operator-token/decode", json=body)
        assert by_path.json() == decoded.json()

        preflight = await http.options(
            "/codec/decode",
            headers={
                "Origin": "http://127.0.0.1:8233",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
        evil = await http.options(
            "/codec/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in evil.headers
