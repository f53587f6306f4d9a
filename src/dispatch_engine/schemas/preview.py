"""Lineup previews: a proposed or saved policy against a posting time."""

from __future__ import annotations

from datetime import date as Date
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatch_engine.rules.zones import ZoneSource
from dispatch_engine.schemas.common import Duration, StrictModel, UtcTime
from dispatch_engine.schemas.policies import BusinessRules, LineupMessageIn


class ProposedPolicy(StrictModel):
    lineup: list[LineupMessageIn] = Field(min_length=1, max_length=100)
    business_rules: BusinessRules = Field(default_factory=BusinessRules)


class PreviewIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"posted_at": "2026-03-06T16:30:00+01:00", "time_zone": "Europe/Berlin"},
                {
                    "posted_at": "2026-03-06T16:30:00+01:00",
                    "mobile": "+33612345678",
                    "token_validity": "P3D",
                },
            ]
        }
    )

    posted_at: UtcTime = Field(description="When the contact file would be received.")
    time_zone: str | None = Field(
        default=None,
        description="The contact's time zone (used when the policy evaluates windows in "
        "the contact's zone).",
        examples=["America/New_York"],
    )
    mobile: str | None = Field(
        default=None,
        max_length=64,
        description="The contact's mobile number (E.164): without a `time_zone`, the one "
        "zone of its country is the contact's, as at ingest. Not stored.",
        examples=["+33612345678"],
    )
    token_validity: Duration | None = Field(
        default=None,
        description="A dispatch's token validity: with it, a message that would go out "
        "with less than the policy's `min_validity_left` of it left shows as suppressed "
        "(`too_late`), as the pipeline would. Without it, validity is not considered.",
        examples=["P3D"],
    )
    policy: ProposedPolicy | None = Field(
        default=None, description="Preview these settings instead of the saved ones."
    )


class PreviewWindow(BaseModel):
    start: datetime = Field(description="With the zone's UTC offset at that instant.")
    end: datetime = Field(description="With the zone's UTC offset at that instant.")
    time_zone: str


class PreviewClosedDay(BaseModel):
    """A closed local date whose opening hours the message had to skip."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"date": "2026-12-25", "reason": "holiday", "name": "Christmas Day"}]
        }
    )

    date: Date = Field(
        description="The local date, in the window's time zone.", examples=["2026-12-25"]
    )
    reason: Literal["closed_date", "holiday"] = Field(
        description="`closed_date`: one of the policy's closed dates; `holiday`: a day of "
        "its public-holiday calendar.",
        examples=["holiday"],
    )
    name: str | None = Field(
        default=None, description="The holiday's name, when the date is one.", examples=["Epiphany"]
    )


class PreviewMessage(BaseModel):
    position: int
    lineup_message_id: str | None
    channel: str
    delay: str = Field(
        description="The delay as the lineup gives it: days are calendar days (they keep "
        "the local time across DST changes), hours, minutes and seconds exact time."
    )
    due_at: datetime = Field(
        description="When the message comes due by its delay, with the window zone's UTC "
        "offset at that instant."
    )
    send_at: datetime = Field(
        description="When it would go out, with the window zone's UTC offset at that instant."
    )
    deferred: bool
    reason: str | None = Field(
        description="`deferred_business_hours` when the window moved it; `too_late` (or "
        "`token_expired`) when it would not go out."
    )
    window: PreviewWindow = Field(description="The business window it goes out in.")
    closed_days: list[PreviewClosedDay] = Field(
        default_factory=list,
        description="Closed dates and holidays skipped between `due_at` and `send_at`, in "
        "order (the message went out at the next opening after them); empty when none.",
        examples=[[{"date": "2026-01-06", "reason": "holiday", "name": "Epiphany"}]],
    )
    suppressed: bool = Field(
        default=False,
        description="It would not go out (`reason`): the invite ends there, and the list "
        "with it. `send_at` is when it would have gone out.",
    )


class PreviewOut(BaseModel):
    policy: str
    proposed: bool
    posted_at: datetime = Field(
        description="As asked, with the window zone's UTC offset at that instant."
    )
    time_zone: str = Field(
        description="The zone the business windows are read in.", examples=["Europe/Paris"]
    )
    time_zone_source: ZoneSource = Field(
        description="Where it comes from: `contact` (the given `time_zone`), "
        "`phone_country` (the one zone of the `mobile`'s country) or `policy` (the "
        "policy's zone: `use_contact_time_zone` off, or no contact zone).",
        examples=["phone_country"],
    )
    messages: list[PreviewMessage]
