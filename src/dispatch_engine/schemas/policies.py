"""Delivery Policy requests and responses (R-POL-1..8)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from dispatch_engine.rules.delays import Delay
from dispatch_engine.rules.holiday_calendars import canonical_country, canonical_subdivision
from dispatch_engine.schemas.common import Duration, StrictModel
from dispatch_engine.schemas.durations import format_delay, format_duration, parse_duration

Channel = Literal["email", "sms"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
MAX_CLOSED_DATES = 1000
#: Closed dates lie in the years the API takes times in (schemas/common.py).
CLOSED_YEARS = (1000, 8999)

MAX_MIN_VALIDITY_LEFT_SECONDS = 30 * 86_400


class TimeRange(StrictModel):
    start: str = Field(examples=["08:00"], description="HH:MM, local time")
    end: str = Field(examples=["17:00"], description="HH:MM, exclusive; 24:00 = end of day")


def _all_day() -> list[TimeRange]:
    return [TimeRange(start="00:00", end="24:00")]


def default_days() -> dict[str, list[TimeRange]]:
    return {day: _all_day() for day in WEEKDAYS[:5]}


def _iso_date(value: object) -> object:
    """Only `YYYY-MM-DD` text (or a date read back from the store): no timestamps, no
    times of day, which a plain `date` field would also take."""
    if isinstance(value, str):
        if not _ISO_DATE.match(value.strip()):
            raise ValueError("must be an ISO 8601 date, YYYY-MM-DD")
        return value.strip()
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError("must be an ISO 8601 date, YYYY-MM-DD")


ClosedDate = Annotated[date, BeforeValidator(_iso_date)]


class HolidayCalendar(StrictModel):
    """A public-holiday calendar of the `holidays` package: every holiday of the country
    (and of the subdivision, when given) is closed."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"country": "DE", "subdivision": "BY"}]}
    )

    country: str = Field(
        description="ISO 3166-1 alpha-2 country code (upper case is stored).",
        examples=["DE"],
    )
    subdivision: str | None = Field(
        default=None,
        max_length=40,
        description="The country's subdivision (state, province …) as the `holidays` "
        "package names it, e.g. BY for Bavaria or NY for New York; leave it out for the "
        "national holidays only.",
        examples=["BY"],
    )

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        return canonical_country(value)

    @field_validator("subdivision")
    @classmethod
    def _subdivision(cls, value: str | None, info: ValidationInfo) -> str | None:
        country = info.data.get("country")
        if country is None:  # the country itself was refused
            return value
        return canonical_subdivision(country, value)


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
    closed_dates: Annotated[list[ClosedDate], Field(max_length=MAX_CLOSED_DATES)] | None = Field(
        default=None,
        description="Local dates (YYYY-MM-DD, in the zone the window is read in) on which "
        "nothing goes out, like a day without hours: a message that falls on one waits for "
        f"the next opening. At most {MAX_CLOSED_DATES}; stored sorted, without repeats. "
        "Closed days may not leave the policy without any opening for a year.",
        examples=[["2026-12-24", "2026-12-31"]],
    )
    holidays: HolidayCalendar | None = Field(
        default=None,
        description="A public-holiday calendar whose days are closed as well (the "
        "maintained `holidays` package; observed substitute days included).",
        examples=[{"country": "DE", "subdivision": "BY"}],
    )

    @field_validator("closed_dates")
    @classmethod
    def _closed_dates(cls, value: list[date] | None) -> list[date] | None:
        if value is None:
            return None
        low, high = CLOSED_YEARS
        for day in value:
            if not low <= day.year <= high:
                raise ValueError(f"closed dates lie in the years {low}-{high}, got {day}")
        return sorted(set(value))

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


DELAY_DESCRIPTION = (
    "ISO 8601 duration. Days and weeks are calendar days: they keep the local time in the "
    "zone the business window is read in, also across DST changes (P1D after 16:00 is "
    "16:00 the next day); hours, minutes and seconds are exact time (PT24H is 24 hours); "
    "P1DT2H is a calendar day, then 2 hours. Message 1 counts from the file's receipt, "
    "message k from message k-1."
)


class LineupMessageIn(StrictModel):
    channel: Channel
    delay: Duration = Field(description=DELAY_DESCRIPTION, examples=["P1D"])


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
    delay: Duration | None = Field(default=None, description=DELAY_DESCRIPTION, examples=["P3D"])


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
    delay: str = Field(
        description="ISO 8601, as given in canonical form: days (weeks as 7 days) are "
        "calendar days that keep the local time across DST changes; hours, minutes and "
        "seconds are exact time and never folded into days (PT36H stays PT36H).",
        examples=["P1DT2H"],
    )
    delay_seconds: int = Field(
        description="The delay's nominal length in seconds, a calendar day counted as 24 "
        "hours (what the lineup's bounds are checked against).",
        examples=[93_600],
    )
    checks: list[str] = Field(description="The rules checked before this message goes out.")


class PolicyOut(BaseModel):
    id: str
    account: str
    name: str
    sandbox: bool
    status: Literal["active", "paused"]
    version: int
    lineup: list[LineupMessageOut]
    total_delay: str = Field(
        description="The lineup's delays added up: calendar days, then exact time.",
        examples=["P3DT2H"],
    )
    fatigue: FatigueRules
    business_rules: BusinessRules
    dnd_webhooks: DndWebhooks
    created_at: datetime
    updated_at: datetime
    paused_dispatches: list[str] | None = Field(
        default=None, description="Dispatches this change paused (mutations only)."
    )


# --- versions -------------------------------------------------------------------------------

MASK = "***"


def masked_url(url: str) -> str:
    """A webhook URL without the values of its query (where tokens travel): `?key=***`.
    Credentials in the URL are refused when it is set (security/ssrf.py), fragments
    dropped, so the query is the one place a secret can hide."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    names = [item.split("=", 1)[0] for item in parts.query.split("&") if item]
    query = "&".join(f"{name}={MASK}" for name in names)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


@dataclass(frozen=True)
class StepState:
    """One live lineup step as a version keeps it."""

    id: str
    position: int
    channel: str
    delay: Delay


def _section(model: type[BaseModel], stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored JSON section as the API shows it (defaults filled, nulls left out); as
    stored if it no longer validates (rows older than a rule)."""
    try:
        return model.model_validate(dict(stored)).model_dump(mode="json", exclude_none=True)
    except ValueError:
        return {name: value for name, value in stored.items() if value is not None}


def version_snapshot(
    *,
    name: str,
    sandbox: bool,
    status: str,
    deleted: bool,
    uuid_field: str,
    fatigue: Mapping[str, Any],
    business_rules: Mapping[str, Any],
    dnd_webhooks: Mapping[str, Any],
    lineup: Sequence[StepState],
) -> dict[str, Any]:
    """What a policy version keeps: the settings as the API shows them, without what
    derives from them (checks, delays in seconds, the total delay), the version and times
    (the version row has them), and secrets (DND URLs' query values are masked).

    One pure function for the service and for migration 0015, so both write one shape."""
    return {
        "name": name,
        "sandbox": sandbox,
        "status": status,
        "deleted": deleted,
        "fatigue": _section(FatigueRules, {**fatigue, "uuid_field": uuid_field}),
        "business_rules": _section(BusinessRules, business_rules),
        "dnd_webhooks": {
            channel: masked_url(dnd_webhooks[channel])
            for channel in ("email", "sms")
            if dnd_webhooks.get(channel)
        },
        "lineup": [
            {
                "id": step.id,
                "position": step.position,
                "channel": step.channel,
                "delay": format_delay(step.delay),
            }
            for step in lineup
        ],
    }


class PolicyVersionSummary(BaseModel):
    number: int = Field(
        description="The policy's `version` (its ETag) right after this change.", examples=[3]
    )
    created_at: datetime = Field(description="When the change was made.")
    key_id: str | None = Field(
        description="The API key that made it, as the audit log names it (None when no "
        "key did, e.g. versions written by a migration).",
        examples=["key_06h23yvjjn3f9a"],
    )
    change: str = Field(
        description="What kind of change it was, as the audit log's action names it "
        "(`policy.create`, `policy.update`, `policy.lineup.insert` …); `migrated` for "
        "the state a policy had when versions began to be recorded.",
        examples=["policy.update"],
    )


class VersionChange(BaseModel):
    path: str = Field(
        description="JSON Pointer into the snapshot (list items by 0-based index).",
        examples=["/business_rules/days/mon"],
    )
    before: Any = Field(default=None, description="The value in version n-1 (null: absent).")
    after: Any = Field(default=None, description="The value in this version (null: absent).")


class PolicyVersionOut(PolicyVersionSummary):
    snapshot: dict[str, Any] = Field(
        description="The policy's settings in this version: name, sandbox, status, "
        "deleted, fatigue, business_rules, dnd_webhooks (query values masked as `***`) "
        "and the lineup (id, position, channel, delay)."
    )
    diff: list[VersionChange] | None = Field(
        description="What changed since version n-1; null when there is none (version 1, "
        "or the first version kept of a policy older than versions)."
    )
