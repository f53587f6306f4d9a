"""Normalisation of addresses and identifiers before hashing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch_engine.security.normalize import (
    InvalidAddress,
    normalize_email,
    normalize_phone,
    normalize_uuid_value,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM \n", "alice@example.com"),
        ("ALICE.SMITH+tag@EXAMPLE.co.uk", "alice.smith+tag@example.co.uk"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("User@BÜCHER.DE", "user@xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("info@例え.jp", "info@xn--r8jz45g.jp"),
        ("Jörg@Example.com", "jörg@example.com"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "not-an-email",
        "a@b",
        "@example.com",
        "alice@",
        "a@@example.com",
        "a b@example.com",
        "a..b@example.com",
        "Alice <alice@example.com>",
        "alice@example.com.",
        "alice@localhost",
        "alice@exa_mple.com",
    ],
)
def test_invalid_emails(raw: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        normalize_email(raw)
    assert info.value.reason == "malformed email address"
    assert raw not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_email(raw: str) -> None:
    with pytest.raises(InvalidAddress, match="empty value"):
        normalize_email(raw)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 650-253-0000", None, "+16502530000"),
        ("+1 (650) 253-0000", None, "+16502530000"),
        ("(650) 253-0000", "US", "+16502530000"),
        ("650.253.0000", "us", "+16502530000"),
        ("020 7031 3000", "GB", "+442070313000"),
        ("0044 20 7031 3000", "GB", "+442070313000"),
        ("07911 123456", "GB", "+447911123456"),
        ("+44 (0)7911 123456", None, "+447911123456"),
        ("+49 30 901820", None, "+4930901820"),
        ("+33 1 42 68 53 00", "GB", "+33142685300"),
        ("  +447911123456  ", None, "+447911123456"),
    ],
)
def test_normalize_phone(raw: str, region: str | None, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("12345", "US", "phone number is not valid E.164"),
        ("+999 1234567", None, "phone number is not valid E.164"),
        ("+1 555 0100", None, "phone number is not valid E.164"),
        ("+1650253000", None, "phone number is not valid E.164"),
        ("call me maybe", "US", "phone number is not valid E.164"),
        ("650-253-0000", None, "phone number needs a country code"),
        ("", None, "empty value"),
    ],
)
def test_invalid_phones(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        normalize_phone(raw, region)
    assert info.value.reason == reason
    if raw:
        assert raw not in str(info.value)
        assert raw.replace(" ", "") not in str(info.value)


def test_uuid_value_dispatches_by_field() -> None:
    assert normalize_uuid_value("email", " Bob@Example.ORG ") == "bob@example.org"
    assert normalize_uuid_value("mobile", "+1 650 253 0000") == "+16502530000"
    assert normalize_uuid_value("customer_id", "  ABC-123 ") == "abc-123"
    # NFKC folds compatibility forms (full-width letters, ligatures); casefold handles ß.
    assert normalize_uuid_value("customer_id", "\uff21\uff22\uff23") == "abc"
    assert normalize_uuid_value("customer_id", "ﬁle") == "file"
    assert normalize_uuid_value("customer_id", "STRASSE") == normalize_uuid_value(
        "customer_id", "straße"
    )


@pytest.mark.parametrize(
    ("field", "raw"), [("customer_id", ""), ("customer_id", " \t "), ("email", " "), ("mobile", "")]
)
def test_uuid_value_empty(field: str, raw: str) -> None:
    with pytest.raises(InvalidAddress, match="empty value"):
        normalize_uuid_value(field, raw)


def test_uuid_value_invalid_address_does_not_leak() -> None:
    with pytest.raises(InvalidAddress) as info:
        normalize_uuid_value("email", "secret-person@@example.com")
    assert "secret-person" not in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1).filter(lambda s: s.strip()))
def test_uuid_value_is_idempotent(raw: str) -> None:
    try:
        once = normalize_uuid_value("external_id", raw)
    except InvalidAddress:
        return
    assert normalize_uuid_value("external_id", once) == once
