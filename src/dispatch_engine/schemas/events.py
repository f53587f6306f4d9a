"""Response and unsubscribe events, resubscribes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from dispatch_engine.schemas.common import StrictModel


class EventIn(StrictModel):
    """`response` by token; `unsubscribe` by token (every channel of the invite, or only
    `channel`) or by channel + address."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"type": "unsubscribe", "channel": "email", "address": "ann@example.com"}]
        }
    )

    type: Literal["response", "unsubscribe"]
    token: str | None = Field(default=None, max_length=100)
    channel: Literal["email", "sms"] | None = None
    address: str | None = Field(default=None, max_length=320)

    @model_validator(mode="after")
    def _shape(self) -> EventIn:
        if self.type == "response" and not self.token:
            raise PydanticCustomError(
                "missing_token", "a response event needs the invite's token", {"field": "token"}
            )
        if self.type == "unsubscribe" and not self.token:
            if not self.address:
                raise PydanticCustomError(
                    "missing_address",
                    "an unsubscribe event needs a token or a channel and an address",
                    {"field": "address"},
                )
            if not self.channel:
                raise PydanticCustomError(
                    "missing_channel",
                    "an unsubscribe by address needs its channel (email or sms)",
                    {"field": "channel"},
                )
        return self


class EventResult(BaseModel):
    type: str
    applied: bool = Field(description="False when the event was already recorded (replay).")
    invite: str | None = None
    messages_stopped: int = 0
    channels: list[str] = Field(
        default_factory=list, description="Unsubscribe: the channels now blocked."
    )


class ResubscribeIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"channel": "email", "address": "ann@example.com"}]}
    )

    channel: Literal["email", "sms"]
    address: str = Field(max_length=320)
