"""Keyed hashes for personal data (fatigue UUIDs, unsubscribed addresses) and API secrets.

Personal values are stored only as HMAC-SHA256 digests under a versioned secret key, so a
leaked table cannot be reversed by hashing guessed addresses. Keys rotate: lookups during a
rotation use :meth:`KeyedHasher.all_digests` to match rows written under any ring key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "MIN_KEY_SIZE",
    "KeyedHasher",
    "all_keyed_hashes",
    "constant_time_equals",
    "hash_api_secret",
    "keyed_hash",
    "old_key_ids",
]

MIN_KEY_SIZE = 16


class KeyedHasher:
    """HMAC-SHA256 over already-normalised values, with a ring of versioned keys."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if not keys:
            raise ValueError("at least one hash key is required")
        if current not in keys:
            raise ValueError(f"current hash key id {current!r} is not in the key ring")
        for key_id, key in keys.items():
            if not key_id or ":" in key_id:
                raise ValueError("hash key ids must be non-empty and contain no ':'")
            if len(key) < MIN_KEY_SIZE:
                raise ValueError(f"hash key {key_id!r} must be at least {MIN_KEY_SIZE} bytes")
        # Current key first so all_digests() lists the preferred digest first.
        self._keys: dict[str, bytes] = {current: bytes(keys[current])}
        self._keys.update({key_id: bytes(key) for key_id, key in keys.items()})
        # Keyed once per key; each digest copies the keyed state instead of re-keying (faster).
        self._keyed = {
            key_id: hmac.new(key, digestmod=hashlib.sha256) for key_id, key in self._keys.items()
        }
        self._current = current

    @property
    def current_key_id(self) -> str:
        """Id of the key used for new digests."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """All key ids, current first."""
        return tuple(self._keys)

    def digest(self, value: str, key_id: str | None = None) -> str:
        """Hex HMAC-SHA256 of ``value`` under ``key_id`` (default: the current key).

        ``value`` must already be normalised (see ``security.normalize``); this function does
        not alter it, so equal inputs always give equal digests.
        """
        chosen = self._current if key_id is None else key_id
        keyed = self._keyed.get(chosen)
        if keyed is None:
            raise ValueError(f"unknown hash key id {chosen!r}")
        mac = keyed.copy()
        mac.update(value.encode("utf-8"))
        return mac.hexdigest()

    def all_digests(self, value: str) -> dict[str, str]:
        """Digest of ``value`` under every ring key (key id -> digest), current first."""
        return {key_id: self.digest(value, key_id) for key_id in self._keys}


def keyed_hash(hasher: KeyedHasher, value: str) -> str:
    """`<key id>:<hex HMAC>`: the key version travels with the hash, for rotation."""
    return f"{hasher.current_key_id}:{hasher.digest(value)}"


def all_keyed_hashes(hasher: KeyedHasher, value: str) -> list[str]:
    """The value's keyed hash under every ring key, current first (lookups mid-rotation)."""
    return [f"{key_id}:{digest}" for key_id, digest in hasher.all_digests(value).items()]


def old_key_ids(hasher: KeyedHasher) -> list[str]:
    """Ring keys other than the current one (what a rotation moves values away from)."""
    return [k for k in hasher.key_ids if k != hasher.current_key_id]


def hash_api_secret(secret: str) -> str:
    """SHA-256 hex of an API key secret.

    The secrets are long random strings, so a fast unsalted hash is enough: there is nothing
    to brute-force, and a fixed digest allows indexed lookup.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    """Compare two strings without leaking where they differ through timing."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
