"""One posted contact (a CSV row or a JSON object) to an accepted contact or a rejection.

Bad rows are rejected one by one with the row number and a reason, without rejecting the
file (R-INV-1). Reasons are fixed phrases: they never repeat an address or attribute value,
which are personal data and end up in responses and logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatch_engine.ingest.columns import canonical_column, is_alias
from dispatch_engine.ingest.csv_stream import ROW_ERROR_KEY
from dispatch_engine.rules.zones import ContactZoneSource, contact_zone
from dispatch_engine.security.normalize import (
    InvalidAddress,
    normalize_email,
    normalize_phone,
    normalize_uuid_value,
)
from dispatch_engine.security.phone_zones import phone_time_zone
from dispatch_engine.security.text import hostile_text_reason

__all__ = [
    "CHANNELS",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_KEY_CHARS",
    "MAX_ATTRIBUTE_VALUE_CHARS",
    "MAX_EXTERNAL_ID_CHARS",
    "ContactIn",
    "Rejection",
    "parse_contact",
]

#: Lineup channels a contact can be reached on.
CHANNELS: frozenset[str] = frozenset({"email", "sms"})
MAX_EXTERNAL_ID_CHARS = 200
MAX_ATTRIBUTE_KEY_CHARS = 100
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_VALUE_CHARS = 2000

#: Key under which JSON contacts may nest their attributes.
_NESTED_ATTRIBUTES = "attributes"
# zoneinfo loads these keys, but they do not name a fixed IANA zone.
_REJECTED_ZONE_KEYS = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True)
class ContactIn:
    """An accepted contact, with addresses in canonical form. `time_zone` is the contact's
    own zone: the file's (`time_zone_source` `contact`), else the one zone of the mobile's
    country (`phone_country`), else None (rules/zones.py)."""

    email: str | None
    mobile: str | None
    external_id: str | None
    time_zone: str | None
    attributes: dict[str, str]
    uuid_value: str
    time_zone_source: ContactZoneSource | None = None


@dataclass(frozen=True)
class Rejection:
    """Why a row was refused; ``field`` names the column, ``reason`` never holds its value."""

    row: int
    field: str
    reason: str


class _Reject(Exception):
    """Internal short-cut out of the checks; becomes a :class:`Rejection`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def parse_contact(
    row_number: int,
    row: Mapping[str, object],
    *,
    channels: frozenset[str],
    uuid_field: str,
    default_region: str | None = None,
) -> ContactIn | Rejection:
    """Validate and normalise one contact for a lineup using ``channels``.

    A contact needs at least one address for the lineup's channels; an address that is
    present must be valid even if the other one would do. ``uuid_field`` is the policy's
    fatigue UUID field: ``email``, ``mobile``, a known column or an attribute name. Keys
    are matched as CSV headers are (``ingest/columns.py``): trimmed, case-insensitive,
    aliases (``phone`` → ``mobile`` …) for the known columns.
    ``default_region`` lets mobile numbers without ``+`` be read as national numbers.
    """
    if not channels or not channels <= CHANNELS:
        raise ValueError("channels must be a non-empty subset of {'email', 'sms'}")
    try:
        return _parse(row, channels, uuid_field, default_region)
    except _Reject as rejected:
        return Rejection(row=row_number, field=rejected.field, reason=rejected.reason)


def _parse(
    row: Mapping[str, object],
    channels: frozenset[str],
    uuid_field: str,
    default_region: str | None,
) -> ContactIn:
    error = row.get(ROW_ERROR_KEY)
    if error is not None:
        raise _Reject("row", str(error))
    _refuse_hostile_text(row)
    known, attributes = _split_columns(row)

    email: str | None = None
    raw_email = known.get("email")
    if raw_email is not None:
        email = _address(normalize_email, "email", raw_email)

    mobile: str | None = None
    raw_mobile = known.get("mobile")
    if raw_mobile is not None:
        mobile = _address(lambda raw: normalize_phone(raw, default_region), "mobile", raw_mobile)

    _check_reachable(channels, email=email, mobile=mobile)

    time_zone = known.get("time_zone")
    if time_zone is not None and not _is_zone(time_zone):
        raise _Reject("time_zone", "unknown time zone")

    external_id = known.get("external_id")
    if external_id is not None and len(external_id) > MAX_EXTERNAL_ID_CHARS:
        raise _Reject(
            "external_id", f"external id is longer than {MAX_EXTERNAL_ID_CHARS} characters"
        )

    uuid_value = _uuid_value(uuid_field, known, attributes, email=email, mobile=mobile)
    phone_zone = phone_time_zone(mobile) if time_zone is None and mobile is not None else None
    zone, zone_source = contact_zone(time_zone, phone_zone)
    return ContactIn(
        email=email,
        mobile=mobile,
        external_id=external_id,
        time_zone=zone,
        attributes=attributes,
        uuid_value=uuid_value,
        time_zone_source=zone_source,
    )


def _refuse_hostile_text(row: Mapping[str, object], nested: bool = False) -> None:
    """A NUL (or, from JSON, a lone surrogate) anywhere in the row rejects the row: it could
    not be stored, hashed or sent on. Named by its column, or `attributes` for a bad name.

    One search over the row's names and values joined clears almost every row (a
    per-field search cost a tenth of an upload's CPU); only a row that fails it, or has
    nested attributes, is walked field by field to name the culprit."""
    if not nested and _clean_flat_row(row):
        return
    for raw_key, value in row.items():
        reason = hostile_text_reason(raw_key)
        if reason:
            raise _Reject(_NESTED_ATTRIBUTES, f"a column name {reason}")
        key, name = _column(raw_key)
        if isinstance(value, str):
            reason = hostile_text_reason(value)
            if reason:
                raise _Reject(name or key, reason)
        elif not nested and key == _NESTED_ATTRIBUTES and isinstance(value, Mapping):
            _refuse_hostile_text(value, nested=True)


def _clean_flat_row(row: Mapping[str, object]) -> bool:
    parts = list(row)
    for value in row.values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, Mapping):
            return False  # nested attributes: walked field by field
    return hostile_text_reason("\n".join(parts)) is None


def _split_columns(row: Mapping[str, object]) -> tuple[dict[str, str], dict[str, str]]:
    """Separate the known columns from the attributes; empty values count as absent."""
    known: dict[str, str] = {}
    attributes: dict[str, str] = {}
    given: dict[str, str] = {}  # known column → the key it was given under
    for raw_key, value in row.items():
        key, name = _column(raw_key)
        if name is not None:
            if name in given:
                raise _Reject(name, _twice(given[name], key))
            given[name] = key
            if value is None:
                continue
            text = _scalar_text(value)
            if text is None:
                raise _Reject(name, "value must be a string")
            if text:
                known[name] = text
        elif key == _NESTED_ATTRIBUTES and isinstance(value, Mapping):
            for nested_key, nested_value in value.items():
                if not isinstance(nested_key, str):
                    raise _Reject(_NESTED_ATTRIBUTES, "attribute names must be strings")
                _add_attribute(attributes, nested_key.strip(), nested_value)
        elif key == _NESTED_ATTRIBUTES and value is None:
            continue
        else:
            _add_attribute(attributes, key, value)
    if len(attributes) > MAX_ATTRIBUTES:
        raise _Reject(_NESTED_ATTRIBUTES, f"a contact has at most {MAX_ATTRIBUTES} attributes")
    return known, attributes


@lru_cache(maxsize=1024)
def _column(raw_key: str) -> tuple[str, str | None]:
    """A column's trimmed name, and its known-column name (None for an attribute).

    Every row of a file repeats the same keys, so this is worked out once per key.
    """
    key = raw_key.strip()
    return key, canonical_column(key)


def _twice(first: str, second: str) -> str:
    """Both keys match the vocabulary of known columns, so they can be quoted."""
    if first.lower() == second.lower():
        return "the column is given more than once"
    return f"the column is given more than once: as '{first}' and as '{second}'"


def _add_attribute(attributes: dict[str, str], key: str, value: object) -> None:
    if not key:
        raise _Reject(_NESTED_ATTRIBUTES, "attribute names must not be empty")
    if len(key) > MAX_ATTRIBUTE_KEY_CHARS:
        raise _Reject(
            _NESTED_ATTRIBUTES,
            f"attribute names are at most {MAX_ATTRIBUTE_KEY_CHARS} characters",
        )
    if key == ROW_ERROR_KEY:
        raise _Reject(_NESTED_ATTRIBUTES, "attribute name is reserved")
    if value is None:
        return
    text = _scalar_text(value)
    if text is None:
        raise _Reject(key, "attribute values must be strings or numbers")
    if not text:
        return
    if len(text) > MAX_ATTRIBUTE_VALUE_CHARS:
        raise _Reject(key, f"attribute values are at most {MAX_ATTRIBUTE_VALUE_CHARS} characters")
    if key in attributes:
        raise _Reject(key, "the attribute is given more than once")
    attributes[key] = text


def _scalar_text(value: object) -> str | None:
    """Stripped text of a string or finite number; None for anything else (or None)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return None  # JSON true/false are not numbers, whatever Python says
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return None


def _address(normalize: Callable[[str], str], field: str, raw: str) -> str:
    try:
        return normalize(raw)
    except InvalidAddress as exc:
        raise _Reject(field, exc.reason) from None


def _check_reachable(channels: frozenset[str], *, email: str | None, mobile: str | None) -> None:
    """At least one address must serve the lineup; the other channel's messages get skipped."""
    wants_email = "email" in channels
    wants_sms = "sms" in channels
    if (wants_email and email) or (wants_sms and mobile):
        return
    if wants_email and wants_sms:
        raise _Reject("email/mobile", "missing both email and mobile for the lineup's messages")
    if wants_email:
        raise _Reject("email", "missing email for the email messages of the lineup")
    raise _Reject("mobile", "missing mobile for the sms messages of the lineup")


def _is_zone(key: str) -> bool:
    return key not in _REJECTED_ZONE_KEYS and _load_zone(key)


@lru_cache(maxsize=512)
def _load_zone(key: str) -> bool:
    try:
        ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _uuid_value(
    uuid_field: str,
    known: Mapping[str, str],
    attributes: Mapping[str, str],
    *,
    email: str | None,
    mobile: str | None,
) -> str:
    """The normalised fatigue UUID; a missing one rejects the row under the field's name."""
    kind = canonical_column(uuid_field)
    missing = _Reject(uuid_field, f"missing the UUID field '{uuid_field}'")
    address = kind in ("email", "mobile")
    # An attribute of exactly that name comes first, except for `email` and `mobile`
    # themselves: an alias such as `phone` may name an attribute stored before aliases
    # existed (key rotation looks those up), or one nested in a JSON contact's attributes.
    raw = None if address and not is_alias(uuid_field) else attributes.get(uuid_field)
    if raw is None and address:
        value = email if kind == "email" else mobile
        if value is None:
            raise missing
        return value
    if raw is None and kind is not None:
        raw = known.get(kind)
    if raw is None:
        raise missing
    try:
        return normalize_uuid_value(uuid_field, raw)
    except InvalidAddress:
        raise missing from None
