"""A contact file's batch: status, counts and rejected rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ColumnsOut(BaseModel):
    """What the service made of a file's columns (a CSV header, or the keys of the JSON
    contacts): the known columns it found, the others it keeps as attributes, and the
    names it read as an alias of a known column."""

    recognised: list[str] = Field(
        description="Known columns found: external_id, email, mobile, time_zone."
    )
    attributes: list[str] = Field(
        description="Other columns, passed to the vendor as attributes, as written."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Names read as a known column, e.g. {"phone": "mobile"}.',
    )
    more_attributes: bool = Field(
        default=False,
        description="JSON only: more attribute names were seen than are listed (200).",
    )


class RejectedRowOut(BaseModel):
    row: int
    field: str
    reason: str


class BatchOut(BaseModel):
    batch: str
    dispatch: str
    status: str
    counts: dict[str, int]
    columns: ColumnsOut | None = Field(
        default=None, description="What the file's columns were read as (null for older batches)."
    )
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    resumed_from: str | None = None
    rejected_rows: list[RejectedRowOut]
    next_rejected_after: int | None = None
