"""Dispatch requests and responses (R-DSP-1, R-DSP-2)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from dispatch_engine.schemas.common import Duration, StrictModel


class DispatchCreate(StrictModel):
    questionnaire_id: str = Field(min_length=1, max_length=200)
    policy_id: str = Field(min_length=1, max_length=64)
    token_validity: Duration = Field(description="How long each invite's survey link is valid.")
    message_templates: dict[str, str] = Field(
        default_factory=dict,
        description="Lineup message id → message template id the vendor understands; one per "
        "lineup message.",
    )


class DispatchPatch(StrictModel):
    """`message_templates` merges: a null value removes that entry."""

    policy_id: str | None = Field(default=None, min_length=1, max_length=64)
    token_validity: Duration | None = None
    message_templates: dict[str, str | None] | None = None


class PauseRequest(StrictModel):
    reason: str | None = Field(default=None, max_length=200)
    incident: str | None = Field(default=None, max_length=64)


class DispatchOut(BaseModel):
    id: str
    account: str
    questionnaire_id: str
    policy_id: str
    token_validity: str
    token_validity_seconds: int
    message_templates: dict[str, str]
    missing_templates: list[str] = Field(
        description="Lineup message ids without a template; the dispatch cannot run until "
        "this is empty."
    )
    status: Literal["active", "paused"]
    pause_reason: str | None
    paused_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class DispatchStats(BaseModel):
    dispatch: str
    invites: dict[str, int] = Field(description="Invites by state, and `total`.")
    messages: dict[str, int] = Field(description="Messages by state, and `total`.")
    reasons: dict[str, dict[str, int]] = Field(
        description="For messages not sent: state → reason → count."
    )
