"""Canonical forms of addresses and identifiers before hashing or validation.

Hashes only match when inputs are spelled identically, so every value is reduced to one
canonical form first. Errors never echo the input: it is personal data.
"""

from __future__ import annotations

import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

__all__ = ["InvalidAddress", "normalize_email", "normalize_phone", "normalize_uuid_value"]


class InvalidAddress(ValueError):
    """The value is not a usable address; ``reason`` is a short phrase without the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_email(raw: str) -> str:
    """Validate an email address and return it lower-cased with an ASCII (IDNA) domain."""
    text = raw.strip()
    if not text:
        raise InvalidAddress("empty value")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        # The library's message quotes the input; do not chain it into logs.
        raise InvalidAddress("malformed email address") from None
    return f"{result.local_part.lower()}@{result.ascii_domain.lower()}"


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """Parse a phone number and return it in E.164 form.

    Numbers without a leading ``+`` need ``default_region`` (ISO 3166 alpha-2, e.g. "GB").
    """
    text = raw.strip()
    if not text:
        raise InvalidAddress("empty value")
    region = default_region.upper() if default_region else None
    if not text.startswith("+") and region is None:
        raise InvalidAddress("phone number needs a country code")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidAddress("phone number is not valid E.164") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidAddress("phone number is not valid E.164")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_uuid_value(field: str, raw: str) -> str:
    """Normalise a fatigue UUID value according to the field it comes from.

    ``email`` and ``mobile`` get address normalisation; any other field is trimmed, NFKC
    normalised and case-folded so visually identical identifiers hash identically.
    """
    kind = field.strip().lower()
    if kind == "email":
        return normalize_email(raw)
    if kind == "mobile":
        return normalize_phone(raw)
    folded = unicodedata.normalize("NFKC", raw.strip()).casefold()
    # Case folding can leave decomposed sequences; re-compose so the result is stable.
    text = unicodedata.normalize("NFKC", folded).strip()
    if not text:
        raise InvalidAddress("empty value")
    return text
