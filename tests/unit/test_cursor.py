"""The one cursor format: round trip, and anything else is a 422 naming `cursor`."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from dispatch_engine.errors import ValidationFailed
from dispatch_engine.schemas.cursor import decode_cursor, encode_cursor


def test_a_cursor_round_trips() -> None:
    at = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "aud_1")) == (at, "aud_1")


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage",
        b'["2026-03-02T09:00:00+00:00"]',
        b'["2026-03-02T09:00:00", "x"]',
        b'["2026-03-02T09:00:00+00:00", "a\\u0000b"]',
        b"[1, 2]",
    ],
)
def test_anything_else_is_refused_naming_the_cursor(raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(ValidationFailed) as refused:
        decode_cursor(cursor)
    assert refused.value.errors[0].field == "cursor"
