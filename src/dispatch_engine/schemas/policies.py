"""Delivery Policy requests and responses (R-POL-1..8)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch_engine.schemas.common import Duration, StrictModel
from dispatch_engine.schemas.durations import format_duration, parse_duration

Channel = Literal["email", "sms"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
MAX_MIN_VALIDITY_LEFT_SECONDS = 30 * 86_400


class TimeRange(StrictModel):
    start: str = Field(examples=["08:00"], description="HH:MM, local time")
    end: str = Field(examples=["17:00"], description="HH:MM, exclusive; 24:00 = end of day")


def _all_day() -> list[TimeRange]:
    return [TimeRange(start="00:00", end="24:00")]


def default_days() -> dict[str, list[TimeRange]]:
    return {day: _all_day() for day in WEEKDAYS[:5]}


class BusinessRules(StrictModel):
    """When messages may go out. Default: Monday to Friday, all day, UTC."""

    time_zone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin")
    days: dict[str, list[TimeRange]] = Field(
        default_factory=default_days,
        description="Open hours per weekday (mon..sun); a missing day is closed.",
    )
    use_contact_time_zone: bool = Field(
        default=False,
        description="Evaluate the window in the contact's own time zone: the contact "
        "file's `time_zone`, else the one zone of the mobile number's country (when it has "
        "exactly one), else `time_zone`. The invite lookup says which (`time_zone_source`).",
    )
    min_validity_left: Duration = Field(
        default="PT1H",
        description="No message goes out with less than this left of its token's validity "
        "(now, or at the window opening it would be deferred to): it is suppressed, reason "
        "`too_late`, and the invite ends. ISO 8601, at most P30D; PT0S turns the rule off.",
        examples=["PT1H", "P1D", "PT0S"],
    )

    @field_validator("min_validity_left")
    @classmethod
    def _at_most_30_days(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds > MAX_MIN_VALIDITY_LEFT_SECONDS:
            raise ValueError("at most 30 days (P30D)")
        return format_duration(seconds)  # one spelling: PT60M is stored and shown as PT1H


class PendingTokenRule(StrictModel):
    """Fatigue rule 1: no new invite while a valid, unanswered token of this policy exists."""

    enabled: bool = True


class MaxInvitesRule(StrictModel):
    """Fatigue rule 2: no new invite after `count` invites in `days` days, across policies."""

    enabled: bool = False
    count: int = Field(default=3, ge=1, le=1000)
    days: int = Field(default=30, ge=1, le=3650)
    scope: Literal["questionnaire", "all"] = "questionnaire"


class FatigueRules(StrictModel):
    uuid_field: str = Field(
        default="email",
        description="Contact field that identifies a person: email, mobile or any attribute.",
    )
    pending_token: PendingTokenRule = Field(default_factory=PendingTokenRule)
    max_invites: MaxInvitesRule = Field(default_factory=MaxInvitesRule)

    @field_validator("uuid_field")
    @classmethod
    def _field_name(cls, value: str) -> str:
        if not _FIELD_NAME.match(value):
            raise ValueError("must be a field name: letters, digits, '_', '.', '-'")
        return value


class DndWebhooks(StrictModel):
    """Do-Not-Disturb webhook URL per channel; unset means no DND check on that channel."""

    email: str | None = None
    sms: str | None = None


class LineupMessageIn(StrictModel):
    channel: Channel
    delay: Duration


class LineupInsert(LineupMessageIn):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"channel": "sms", "delay": "P1D", "position": 2}]}
    )

    position: int | None = Field(
        default=None, ge=1, description="1-based position; default: append at the end"
    )


class PolicyEdit(StrictModel):
    """An edit of a policy or its lineup: optionally conditional on the version read."""

    version: int | None = Field(
        default=None,
        ge=1,
        description="The version you read (as If-Match does): refused with 412 when the "
        "policy changed since. Leave it out to edit whatever is current.",
    )


class LineupPatch(PolicyEdit):
    model_config = ConfigDict(json_schema_extra={"examples": [{"delay": "P3D", "version": 3}]})

    channel: Channel | None = None
    delay: Duration | None = None


class PolicyCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "NPS",
                    "lineup": [
                        {"channel": "email", "delay": "PT0S"},
                        {"channel": "email", "delay": "P2D"},
                    ],
                    "business_rules": {
                        "time_zone": "Europe/Berlin",
                        "days": {day: [{"start": "00:00", "end": "24:00"}] for day in WEEKDAYS},
                    },
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200)
    lineup: list[LineupMessageIn] = Field(default_factory=list, max_length=100)
    fatigue: FatigueRules = Field(default_factory=FatigueRules)
    business_rules: BusinessRules = Field(default_factory=BusinessRules)
    dnd_webhooks: DndWebhooks = Field(default_factory=DndWebhooks)


class PolicyPatch(PolicyEdit):
    """Fields given are changed; nested objects merge with what is stored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": 2,
                    "name": "NPS 2026",
                    "business_rules": {
                        "days": {day: [{"start": "08:00", "end": "17:00"}] for day in WEEKDAYS[:5]}
                    },
                }
            ]
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    fatigue: dict[str, object] | None = None
    business_rules: dict[str, object] | None = None
    dnd_webhooks: dict[str, object] | None = None


class LineupMessageOut(BaseModel):
    id: str
    position: int
    channel: Channel
    delay: str
    delay_seconds: int
    checks: list[str] = Field(description="The rules checked before this message goes out.")


class PolicyOut(BaseModel):
    id: str
    account: str
    name: str
    sandbox: bool
    status: Literal["active", "paused"]
    version: int
    lineup: list[LineupMessageOut]
    total_delay: str
    fatigue: FatigueRules
    business_rules: BusinessRules
    dnd_webhooks: DndWebhooks
    created_at: datetime
    updated_at: datetime
    paused_dispatches: list[str] | None = Field(
        default=None, description="Dispatches this change paused (mutations only)."
    )
