"""The audit log's entries and pages (`/v1/admin/audit`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditOut(BaseModel):
    id: str
    at: datetime
    key_id: str | None
    role: str | None
    action: str
    target_type: str
    target_id: str
    account: str | None
    incident: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None
