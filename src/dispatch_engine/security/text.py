"""Text no part of the service accepts: NUL characters and lone surrogates.

PostgreSQL cannot store a NUL in `text` or `\\u0000` in `jsonb`, and a lone surrogate
(JSON's `"\\ud800"`) is not Unicode: no driver, queue SDK or JSON encoder can encode it.
Such text is refused where it comes in (api/text_guard.py for requests, ingest/rows.py for
contact rows) rather than failing deep inside a write. A surrogate *pair* decodes to one
character, so any surrogate left in a Python string is a lone one.
"""

from __future__ import annotations

import re

_HOSTILE = re.compile("[\x00\ud800-\udfff]")


def hostile_text_reason(value: str) -> str | None:
    """Why `value` is refused (a fixed phrase, never the value), or None when it is fine."""
    found = _HOSTILE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "must not contain lone surrogates (not valid Unicode)"
