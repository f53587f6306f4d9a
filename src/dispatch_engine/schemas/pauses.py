"""Pause requests and answers (`/v1/admin/pauses`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from dispatch_engine.schemas.common import StrictModel

Scope = Literal["dispatch", "policy", "account", "channel"]


class PauseIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "scope": "channel",
                    "target": "sms",
                    "incident": "inc_06h2411qqr3f9a1c2d3e4f5a6b7c",
                    "reason": "SMS vendor outage",
                }
            ]
        }
    )

    scope: Scope
    target: str = Field(
        min_length=1, max_length=64, description="Dispatch, policy or account id; or email / sms"
    )
    incident: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _channel(self) -> PauseIn:
        if self.scope == "channel" and self.target not in ("email", "sms"):
            raise PydanticCustomError(
                "channel_target", "a channel pause targets 'email' or 'sms'", {"field": "target"}
            )
        return self


class PauseOut(BaseModel):
    id: str
    scope: str
    target: str
    incident: str | None
    reason: str | None
    created_at: datetime
    created_by: str | None
    lifted_at: datetime | None
    lifted_by: str | None
