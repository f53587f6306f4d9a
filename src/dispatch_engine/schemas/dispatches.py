"""Dispatch requests and responses (R-DSP-1, R-DSP-2)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatch_engine.schemas.common import Duration, StrictModel


class DispatchCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "questionnaire_id": "nps-2026",
                    "policy_id": "pol_06h23yvjjn3f9a1c2d3e4f5a6b7c",
                    "token_validity": "P14D",
                    "message_templates": {
                        "msg_06h23yvjjp9c1d2e3f4a5b6c7d8e": "tpl-1",
                        "msg_06h23yvjjp4f5a6b7c8d9e0f1a2b": "tpl-2",
                    },
                }
            ]
        }
    )

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

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token_validity": "P21D",
                    "message_templates": {"msg_06h23z1kq07b8c9d0e1f2a3b4c5d": "tpl-3"},
                }
            ]
        }
    )

    policy_id: str | None = Field(default=None, min_length=1, max_length=64)
    token_validity: Duration | None = None
    message_templates: dict[str, str | None] | None = None


class PauseRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"reason": "SMS vendor outage", "incident": "inc_06h2411qqr3f9a1c2d3e4f5a6b7c"}
            ]
        }
    )

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
