"""Encrypted workflow payloads: an AES-GCM payload codec with rotating keys.

Where ``PAYLOAD_ENCRYPTION_KEY`` is set, every payload the worker, the client and the
hook send to Temporal is encrypted; Temporal stores only ciphertext, so customer ids,
reasons and amounts stay out of its database and out of the Web UI unless an operator
decodes them through the codec endpoints of the admin hook.

Key format: comma-separated ``key_id:base64key`` entries, each key 16, 24 or 32 bytes
(AES-128/192/256). The first entry encrypts; all of them decrypt, so a new key goes
first and old ones stay until no running history needs them. A bare base64 key gets
an id derived from its hash.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
# 96-bit nonces, random per payload: the NIST-recommended size for AES-GCM.
NONCE_BYTES = 12


class EncryptionKeyError(ValueError):
    """``PAYLOAD_ENCRYPTION_KEY`` is malformed (the message never contains key material)."""


class UndecryptablePayloadError(ValueError):
    """A payload marked as ours can't be decrypted: its key id is unknown or not text, or
    its bytes were changed or cut after encryption. The message names no payload bytes."""


def parse_keys(value: str) -> list[tuple[str, bytes]]:
    """``id1:key1,id2:key2`` → ``[(id1, key1), …]``; the first one encrypts."""
    keys: list[tuple[str, bytes]] = []
    for n, entry in enumerate(filter(None, (e.strip() for e in value.split(","))), start=1):
        key_id, sep, encoded = entry.rpartition(":")
        if not sep:
            encoded = entry
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise EncryptionKeyError(f"key {n} is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise EncryptionKeyError(f"key {n} must be 16, 24 or 32 bytes, not {len(key)}")
        keys.append((key_id or hashlib.sha256(key).hexdigest()[:8], key))
    if not keys:
        raise EncryptionKeyError("no key given")
    return keys


def new_key() -> str:
    """A fresh 256-bit key in the format above, for the dev stack and for operators."""
    return base64.b64encode(os.urandom(32)).decode()


class EncryptionCodec(PayloadCodec):
    """Encrypts with the current key; decrypts with whichever key the payload names."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise EncryptionKeyError("no key given")
        self._current_id, current = keys[0]
        self._current = AESGCM(current)
        self._by_id = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def from_setting(cls, value: str) -> EncryptionCodec:
        """Build from the ``PAYLOAD_ENCRYPTION_KEY`` value."""
        return cls(parse_keys(value))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload whole (its metadata too)."""
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt our payloads; others (recorded before encryption was on) pass through."""
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self._current_id.encode()
        sealed = self._current.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: key_id},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        try:
            key_id = payload.metadata.get(KEY_ID, b"").decode()
        except UnicodeDecodeError:
            raise UndecryptablePayloadError("the payload's key id is not text") from None
        cipher = self._by_id.get(key_id)
        if cipher is None:
            raise UndecryptablePayloadError(
                f"payload was encrypted with unknown key id {key_id[:64]!r}"
            )
        if len(payload.data) <= NONCE_BYTES:
            raise UndecryptablePayloadError("the payload is too short to be ours")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            clear = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            # AES-GCM authenticates: any changed byte (or a wrong key) fails here.
            raise UndecryptablePayloadError(
                "the payload was changed after encryption, or sealed with another key"
            ) from None
        decoded = Payload()
        try:
            decoded.ParseFromString(clear)
        except DecodeError:
            raise UndecryptablePayloadError("the decrypted payload is not a payload") from None
        return decoded


def data_converter(encryption_key: str | None) -> DataConverter:
    """The one data converter: pydantic, plus encryption where a key is configured."""
    if not encryption_key:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=EncryptionCodec.from_setting(encryption_key)
    )
