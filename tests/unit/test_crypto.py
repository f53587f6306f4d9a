"""Field encryption at rest with key rotation."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch_engine.security.crypto import (
    DecryptionError,
    FieldCipher,
    generate_key,
    parse_key_ring,
)

K1 = os.urandom(32)
K2 = os.urandom(32)


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_round_trip_and_token_format() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    token = cipher.encrypt("s3cr3t value ✓")
    key_id, _, payload = token.partition(":")
    assert key_id == "k1"
    assert "s3cr3t" not in token
    assert set(payload) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert cipher.decrypt(token) == "s3cr3t value ✓"


def test_nonce_is_random() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    assert cipher.encrypt("same") != cipher.encrypt("same")


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_round_trip_any_text(text: str) -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    assert cipher.decrypt(cipher.encrypt(text, aad=b"row-1"), aad=b"row-1") == text


def test_rotation_keeps_old_values_readable() -> None:
    old_ring = FieldCipher({"k1": K1}, "k1")
    old_token = old_ring.encrypt("written before rotation")

    new_ring = FieldCipher({"k2": K2, "k1": K1}, "k2")
    assert new_ring.current_key_id == "k2"
    assert new_ring.decrypt(old_token) == "written before rotation"
    assert new_ring.needs_reencryption(old_token)

    new_token = new_ring.encrypt("written after rotation")
    assert new_token.startswith("k2:")
    assert not new_ring.needs_reencryption(new_token)
    # The old ring cannot read values sealed with a key it does not know.
    with pytest.raises(DecryptionError):
        old_ring.decrypt(new_token)


def test_rotation_via_parsed_key_ring() -> None:
    keys, current = parse_key_ring(f"k1:{_b64(K1)}")
    token = FieldCipher(keys, current).encrypt("v")
    keys, current = parse_key_ring(f"k2:{_b64(K2)}, k1:{_b64(K1)}")
    assert current == "k2"
    assert FieldCipher(keys, current).decrypt(token) == "v"


def test_unknown_key_id() -> None:
    token = FieldCipher({"k1": K1}, "k1").encrypt("v")
    other = FieldCipher({"k9": K1}, "k9")
    with pytest.raises(DecryptionError) as info:
        other.decrypt(token)
    assert token.partition(":")[2] not in str(info.value)


def test_same_id_different_key_fails() -> None:
    token = FieldCipher({"k1": K1}, "k1").encrypt("v")
    with pytest.raises(DecryptionError):
        FieldCipher({"k1": K2}, "k1").decrypt(token)


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_tamper_detection(position: int) -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    key_id, _, payload = cipher.encrypt("pay me 100").partition(":")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[position] ^= 0x01
    forged = f"{key_id}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(forged)
    assert "pay me" not in str(info.value)


@pytest.mark.parametrize("token", ["", "no-separator", "k1:", "k1:abc", "k1:!!!!", "k1:é"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(DecryptionError):
        FieldCipher({"k1": K1}, "k1").decrypt(token)


def test_aad_mismatch() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    token = cipher.encrypt("bound", aad=b"account:1")
    assert cipher.decrypt(token, aad=b"account:1") == "bound"
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, aad=b"account:2")
    with pytest.raises(DecryptionError):
        cipher.decrypt(token)


def test_json_helpers() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    obj = {"access_key": "AKIA...", "nested": {"n": 1, "l": [1, "two"]}, "ü": None}
    token = cipher.encrypt_json(obj, aad=b"a")
    assert cipher.decrypt_json(token, aad=b"a") == obj
    with pytest.raises(DecryptionError):
        cipher.decrypt_json(cipher.encrypt("[1, 2]"))
    with pytest.raises(DecryptionError):
        cipher.decrypt_json(cipher.encrypt("not json"))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        FieldCipher({}, "k1")
    with pytest.raises(ValueError):
        FieldCipher({"k1": K1}, "k2")
    with pytest.raises(ValueError):
        FieldCipher({"k1": b"short"}, "k1")
    with pytest.raises(ValueError):
        FieldCipher({"k:1": K1}, "k:1")


def test_generate_key() -> None:
    key = generate_key()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert generate_key() != key
    keys, current = parse_key_ring(f"new:{key}")
    assert current == "new" and len(keys["new"]) == 32


def test_parse_key_ring_order_and_urlsafe() -> None:
    urlsafe = base64.urlsafe_b64encode(K2).decode()
    keys, current = parse_key_ring(f" k3:{_b64(K1)} ,k2:{urlsafe}")
    assert current == "k3"
    assert list(keys) == ["k3", "k2"]
    assert keys == {"k3": K1, "k2": K2}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty"),
        ("  ", "empty"),
        (",", "empty"),
        (f"k1:{_b64(K1)},", "entry 2 is empty"),
        (f"k1{_b64(K1)}", "must look like"),
        (f":{_b64(K1)}", "must look like"),
        ("k1:not base64!!", "not valid base64"),
        (f"k1:{_b64(b'x' * 16)}", "32 bytes, got 16"),
        (f"k1:{_b64(b'x' * 33)}", "32 bytes, got 33"),
        (f"k1:{_b64(K1)},k1:{_b64(K2)}", "duplicate"),
        (f"bad id:{_b64(K1)}", "key id"),
    ],
)
def test_parse_key_ring_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_key_ring(spec)
    assert _b64(K1) not in str(info.value)
    assert _b64(K2) not in str(info.value)
