"""Keyed hashes of personal data and API secrets."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from dispatch_engine.security.hashing import KeyedHasher, constant_time_equals, hash_api_secret

OLD = b"o" * 32
NEW = b"n" * 32


def test_digest_is_hmac_sha256_and_stable() -> None:
    hasher = KeyedHasher({"h1": OLD}, "h1")
    expected = hmac.new(OLD, b"alice@example.com", hashlib.sha256).hexdigest()
    assert hasher.digest("alice@example.com") == expected
    assert hasher.digest("alice@example.com") == expected
    assert KeyedHasher({"h1": OLD}, "h1").digest("alice@example.com") == expected
    assert len(expected) == 64


def test_digest_differs_per_key_and_value() -> None:
    hasher = KeyedHasher({"h2": NEW, "h1": OLD}, "h2")
    assert hasher.current_key_id == "h2"
    assert hasher.digest("v") == hasher.digest("v", "h2")
    assert hasher.digest("v", "h1") != hasher.digest("v", "h2")
    assert hasher.digest("v") != hasher.digest("w")
    # The value is taken as given: normalisation is the caller's job.
    assert hasher.digest("V") != hasher.digest("v")


def test_all_digests_lists_every_key_current_first() -> None:
    hasher = KeyedHasher({"h1": OLD, "h2": NEW}, "h2")
    digests = hasher.all_digests("+447911123456")
    assert list(digests) == ["h2", "h1"]
    assert hasher.key_ids == ("h2", "h1")
    assert digests["h1"] == KeyedHasher({"h1": OLD}, "h1").digest("+447911123456")
    assert digests["h2"] == hasher.digest("+447911123456")


def test_lookup_during_rotation_matches_old_rows() -> None:
    stored = KeyedHasher({"h1": OLD}, "h1").digest("uuid-123")
    rotated = KeyedHasher({"h2": NEW, "h1": OLD}, "h2")
    assert stored in rotated.all_digests("uuid-123").values()
    assert stored != rotated.digest("uuid-123")


def test_unknown_key_id() -> None:
    with pytest.raises(ValueError, match="unknown hash key id"):
        KeyedHasher({"h1": OLD}, "h1").digest("v", "h9")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        KeyedHasher({}, "h1")
    with pytest.raises(ValueError):
        KeyedHasher({"h1": OLD}, "h2")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        KeyedHasher({"h1": b"short"}, "h1")


def test_hash_api_secret() -> None:
    secret = "Zq3v-random-high-entropy-secret"
    assert hash_api_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert hash_api_secret(secret) != hash_api_secret(secret + "x")


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals("abc", "abcd")
    assert constant_time_equals("ünïcode", "ünïcode")
    assert not constant_time_equals("ünïcode", "unicode")
