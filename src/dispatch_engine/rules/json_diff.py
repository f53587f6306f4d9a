"""What changed between two JSON documents, as a list of `{path, before, after}` (pure).

Paths are JSON Pointers (RFC 6901): `/business_rules/days/mon`, `/lineup/1/delay` (list
items by their 0-based index, `~` and `/` in a member name escaped as `~0` and `~1`).
Objects are compared member by member, lists item by item, so a change names the
deepest path that differs. A member or item present on one side only is one change whose
other side is None; so is a value whose type changed (an object that became a list or a
number). A member that is null on one side and missing on the other is no change: both
read as None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JsonChange:
    path: str
    before: Any
    after: Any


def pointer_token(name: str | int) -> str:
    """One step of a JSON Pointer (RFC 6901 escaping)."""
    return str(name).replace("~", "~0").replace("/", "~1")


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _same(before: Any, after: Any) -> bool:
    # JSON has no bool/number equality: True == 1 in Python, not in a document
    if isinstance(before, bool) != isinstance(after, bool):
        return False
    return bool(before == after)


def json_diff(before: Any, after: Any, path: str = "") -> list[JsonChange]:
    """The changes that turn `before` into `after`, in document order (object members
    sorted by name, list items by index)."""
    if _is_object(before) and _is_object(after):
        changes: list[JsonChange] = []
        for name in sorted(set(before) | set(after), key=str):
            changes += json_diff(before.get(name), after.get(name), f"{path}/{pointer_token(name)}")
        return changes
    if _is_list(before) and _is_list(after):
        changes = []
        for index in range(max(len(before), len(after))):
            changes += json_diff(
                before[index] if index < len(before) else None,
                after[index] if index < len(after) else None,
                f"{path}/{index}",
            )
        return changes
    if _same(before, after):
        return []
    return [JsonChange(path, before, after)]
