"""Optimistic concurrency: ETag is the quoted version; edits must send If-Match."""

from __future__ import annotations

from dispatch_engine.errors import PreconditionFailed, PreconditionRequired


def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, version: int, *, required: bool) -> None:
    """428 when required and missing, 412 when no listed tag matches the current version."""
    if if_match is None or not if_match.strip():
        if required:
            raise PreconditionRequired()
        return
    tags = [tag.strip() for tag in if_match.split(",")]
    for tag in tags:
        if tag == "*":
            return
        if tag.removeprefix("W/").strip('"') == str(version):
            return
    raise PreconditionFailed(version)
