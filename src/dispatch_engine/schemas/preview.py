"""Lineup previews: a proposed or saved policy against a posting time."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from dispatch_engine.schemas.common import StrictModel, UtcTime
from dispatch_engine.schemas.policies import BusinessRules, LineupMessageIn


class ProposedPolicy(StrictModel):
    lineup: list[LineupMessageIn] = Field(min_length=1, max_length=100)
    business_rules: BusinessRules = Field(default_factory=BusinessRules)


class PreviewIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"posted_at": "2026-03-06T16:30:00+01:00", "time_zone": "Europe/Berlin"}]
        }
    )

    posted_at: UtcTime = Field(description="When the contact file would be received.")
    time_zone: str | None = Field(
        default=None,
        description="The contact's time zone (used when the policy evaluates windows in "
        "the contact's zone).",
    )
    policy: ProposedPolicy | None = Field(
        default=None, description="Preview these settings instead of the saved ones."
    )


class PreviewWindow(BaseModel):
    start: datetime
    end: datetime
    time_zone: str


class PreviewMessage(BaseModel):
    position: int
    lineup_message_id: str | None
    channel: str
    delay: str
    due_at: datetime = Field(description="When the message comes due by its delay.")
    send_at: datetime = Field(description="When it would go out.")
    deferred: bool
    reason: str | None = Field(description="`deferred_business_hours` when the window moved it.")
    window: PreviewWindow = Field(description="The business window it goes out in.")


class PreviewOut(BaseModel):
    policy: str
    proposed: bool
    posted_at: datetime
    messages: list[PreviewMessage]
