"""A contact file's batch: status, counts and rejected rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class RejectedRowOut(BaseModel):
    row: int
    field: str
    reason: str


class BatchOut(BaseModel):
    batch: str
    dispatch: str
    status: str
    counts: dict[str, int]
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    resumed_from: str | None = None
    rejected_rows: list[RejectedRowOut]
    next_rejected_after: int | None = None
