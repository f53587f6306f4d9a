"""Canonical forms of addresses and identifiers before hashing or validation.

Hashes only match when inputs are spelled identically, so every value is reduced to one
canonical form first. Errors never echo the input: it is personal data.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from dispatch_engine.security.phone_validity import is_valid_e164

__all__ = ["InvalidAddress", "normalize_email", "normalize_phone", "normalize_uuid_value"]


class InvalidAddress(ValueError):
    """The value is not a usable address; ``reason`` is a short phrase without the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The plain ASCII shape nearly every address has. Anything else (quotes, Unicode, IDNA
# labels, special-use domains) goes through email-validator; a test checks that this fast
# path never accepts what email-validator refuses, nor spells a result differently.
_PLAIN_EMAIL = re.compile(
    r"(?=[^@]{1,64}@)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
_SPECIAL_DOMAIN_SUFFIXES = tuple("." + name for name in SPECIAL_USE_DOMAIN_NAMES)
# Canonical E.164 as most files carry it: "+" and 7 to 15 digits, no leading zero.
_PLAIN_E164 = re.compile(r"\+([1-9]\d{6,14})")


def _plain_email(text: str) -> str | None:
    lowered = text.lower()
    if len(lowered) > 254 or not _PLAIN_EMAIL.fullmatch(lowered):
        return None
    domain = lowered.rsplit("@", 1)[1]
    if "--" in domain or ("." + domain).endswith(_SPECIAL_DOMAIN_SUFFIXES):
        return None  # a special-use domain or a subdomain of one
    return lowered


def normalize_email(raw: str) -> str:
    """Validate an email address and return it lower-cased with an ASCII (IDNA) domain."""
    text = raw.strip()
    if not text:
        raise InvalidAddress("empty value")
    plain = _plain_email(text)
    if plain is not None:
        return plain
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
    plain = _plain_e164(text)
    if plain is not None:
        return plain
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


def _plain_e164(text: str) -> str | None:
    """Validate an already-canonical E.164 number without the (slow) generic parser."""
    match = _PLAIN_E164.fullmatch(text)
    if match is None:
        return None
    digits = match.group(1)
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if not national or national.startswith("0"):
                return None  # leading zeros need the parser's care (e.g. Italy)
            if not is_valid_e164(code, national):
                raise InvalidAddress("phone number is not valid E.164")
            return text
    return None


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
