"""The one cursor format of every paged list: base64url of a small JSON list (a time and
ids), opaque to clients; a cursor that is not one answers 422 naming `cursor`."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from dispatch_engine.errors import ValidationFailed
from dispatch_engine.security.text import hostile_text_reason

_BAD = "not a cursor from a previous page"


def encode_keys(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keys(cursor: str, count: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (ValueError, binascii.Error):
        raise ValidationFailed("cursor", _BAD) from None
    if not isinstance(parts, list) or len(parts) != count:
        raise ValidationFailed("cursor", _BAD)
    if not all(isinstance(p, str) and hostile_text_reason(p) is None for p in parts):
        raise ValidationFailed("cursor", _BAD)  # a NUL inside would reach the database
    return parts


def parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed("cursor", _BAD) from None
    if at.tzinfo is None:
        raise ValidationFailed("cursor", _BAD)
    return at


def encode_cursor(at: datetime, last_id: str) -> str:
    return encode_keys(at.isoformat(), last_id)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    at, last_id = decode_keys(cursor, 2)
    return parse_time(at), last_id
