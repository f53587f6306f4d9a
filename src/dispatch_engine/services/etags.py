"""Optimistic concurrency: ETag is the quoted version. An edit that sends If-Match (or a
`version` field in its body) is refused when the resource changed since; one that sends
neither applies to whatever is current."""

from __future__ import annotations

from dispatch_engine.errors import PreconditionFailed


def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, version: int) -> None:
    """412 when If-Match is sent and no tag it lists matches the current version."""
    if if_match is None or not if_match.strip():
        return
    tags = [tag.strip() for tag in if_match.split(",")]
    for tag in tags:
        if tag == "*":
            return
        if tag.removeprefix("W/").strip('"') == str(version):
            return
    raise PreconditionFailed(version)


def check_version(version: int | None, current: int) -> None:
    """The body's `version` field, the alternative to If-Match: 412 when it is stale."""
    if version is not None and version != current:
        raise PreconditionFailed(current)
