"""Field-level encryption at rest (AES-256-GCM) with key rotation.

Tokens carry the id of the key that sealed them (``"<key_id>:<base64url(nonce + ct+tag)>"``),
so a key ring can add a new current key while old rows stay readable until re-encrypted.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_SIZE",
    "DecryptionError",
    "FieldCipher",
    "generate_key",
    "parse_key_ring",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class DecryptionError(Exception):
    """A token could not be decrypted; deliberately carries no token or key detail."""


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID_RE.fullmatch(key_id):
        raise ValueError("key id must be 1-64 characters of letters, digits, '.', '_' or '-'")


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64url_decode(text: str) -> bytes:
    """Strict (any character outside the alphabet is an error), as `b64decode(validate=True)`
    is, but straight to binascii: this runs once per message sent."""
    padded = text + "=" * (-len(text) % 4)
    return binascii.a2b_base64(
        padded.encode("ascii").translate(_URLSAFE_TO_STANDARD), strict_mode=True
    )


def generate_key() -> str:
    """Return a fresh random AES-256 key as standard base64 (for ``parse_key_ring`` specs)."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


def parse_key_ring(spec: str) -> tuple[dict[str, bytes], str]:
    """Parse ``"k2:<base64>,k1:<base64>"`` into (keys, current id); the FIRST entry is current.

    Errors name the offending key id or position but never include key material.
    """
    entries = [entry.strip() for entry in spec.split(",")]
    if not any(entries):
        raise ValueError("key ring is empty")
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise ValueError(f"key ring entry {position} is empty")
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id:
            raise ValueError(f"key ring entry {position} must look like '<key_id>:<base64 key>'")
        _check_key_id(key_id)
        if key_id in keys:
            raise ValueError(f"duplicate key id {key_id!r} in key ring")
        try:
            key = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            try:
                key = _b64url_decode(encoded)
            except (binascii.Error, UnicodeEncodeError):
                raise ValueError(f"key {key_id!r} is not valid base64") from None
        if len(key) != KEY_SIZE:
            raise ValueError(f"key {key_id!r} must decode to {KEY_SIZE} bytes, got {len(key)}")
        keys[key_id] = key
    return keys, next(iter(keys))


class FieldCipher:
    """Encrypt/decrypt individual fields with AES-256-GCM under a rotating key ring."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        if current not in keys:
            raise ValueError(f"current key id {current!r} is not in the key ring")
        self._aeads: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if len(key) != KEY_SIZE:
                raise ValueError(f"key {key_id!r} must be {KEY_SIZE} bytes")
            self._aeads[key_id] = AESGCM(bytes(key))
        self._current = current

    @property
    def current_key_id(self) -> str:
        """Id of the key used for new encryptions."""
        return self._current

    def needs_reencryption(self, token: str) -> bool:
        """True when ``token`` was sealed with a key other than the current one."""
        return token.partition(":")[0] != self._current

    def encrypt(self, plaintext: str, *, aad: bytes = b"") -> str:
        """Seal ``plaintext`` with the current key; ``aad`` binds it to its context (e.g. row)."""
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aeads[self._current].encrypt(nonce, plaintext.encode("utf-8"), aad)
        return f"{self._current}:{_b64url_encode(nonce + sealed)}"

    def decrypt(self, token: str, *, aad: bytes = b"") -> str:
        """Open a token from :meth:`encrypt`, whichever ring key sealed it."""
        key_id, sep, payload = token.partition(":")
        if not sep:
            raise DecryptionError("malformed encrypted value")
        aead = self._aeads.get(key_id)
        if aead is None:
            raise DecryptionError("encrypted value uses an unknown key id")
        try:
            raw = _b64url_decode(payload)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise DecryptionError("malformed encrypted value") from None
        if len(raw) < NONCE_SIZE + TAG_SIZE:
            raise DecryptionError("malformed encrypted value")
        try:
            plaintext = aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], aad)
            return plaintext.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise DecryptionError("encrypted value failed authentication") from None

    def encrypt_json(self, obj: Mapping[str, Any], *, aad: bytes = b"") -> str:
        """Encrypt a JSON object (dict) as one field."""
        text = orjson.dumps(dict(obj), option=orjson.OPT_SORT_KEYS).decode()
        return self.encrypt(text, aad=aad)

    def decrypt_json(self, token: str, *, aad: bytes = b"") -> dict[str, Any]:
        """Decrypt a field produced by :meth:`encrypt_json`."""
        text = self.decrypt(token, aad=aad)
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise DecryptionError("decrypted value is not JSON") from None
        if not isinstance(obj, dict):
            raise DecryptionError("decrypted value is not a JSON object")
        return obj
