"""Shared request/response pieces."""

from __future__ import annotations

import re
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dispatch_engine.schemas.durations import parse_duration

_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _account_id(value: str) -> str:
    if not _ACCOUNT_ID.match(value):
        raise ValueError(
            "account ids are 1-64 characters: letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return value


def _duration(value: str) -> str:
    parse_duration(value)
    return value.strip().upper()


AccountId = Annotated[str, AfterValidator(_account_id)]
Duration = Annotated[
    str,
    AfterValidator(_duration),
    Field(description="ISO 8601 duration, e.g. PT1H or P3D", examples=["P3D"]),
]


class StrictModel(BaseModel):
    """Request bodies refuse unknown fields so typos are errors, not silent no-ops."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
