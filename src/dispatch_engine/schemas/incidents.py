"""Request and response models of the incident API. Times are RFC 3339 with an offset:
naive datetimes are refused (AwareDatetime)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dispatch_engine.rules.incident_states import State
from dispatch_engine.schemas.common import AccountId, StrictModel, UtcTime

Severity = Literal["P1", "P2", "P3", "P4"]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=20_000)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


Link = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_http_url)]


class IncidentFields(StrictModel):
    """The editable fields (all optional: PATCH sends only what changes)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"severity": "P2", "communicator": "Colin"}]}
    )

    title: ShortText | None = None
    service: ShortText | None = Field(default=None, description="Product or service impacted.")
    description: LongText | None = None
    impact: LongText | None = None
    severity: Severity | None = Field(
        default=None, description="P1/P2 are major. Agreed at acknowledgement; changeable later."
    )
    started_at: UtcTime | None = Field(
        default=None, description="When the impact began (default: when reported)."
    )
    symptoms: LongText | None = None
    steps_to_reproduce: LongText | None = None
    evidence_links: list[Link] | None = Field(default=None, max_length=100)
    stakeholders: list[ShortText] | None = Field(default=None, max_length=100)
    impacted_accounts: list[AccountId] | None = Field(default=None, max_length=10_000)
    commander: ShortText | None = Field(default=None, description="Incident commander.")
    communicator: ShortText | None = Field(default=None, description="Designated communicator.")
    customer_tickets: list[ShortText] | None = Field(default=None, max_length=1000)


class IncidentCreate(IncidentFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Invitations not delivered",
                    "service": "Invitation relay (SQS)",
                    "impact": "Invitations of every account are queued but not pushed since 09:00",
                    "started_at": "2026-03-02T09:00:00Z",
                    "impacted_accounts": ["acme"],
                    "commander": "Ines",
                }
            ]
        }
    )

    title: ShortText
    service: ShortText


class TransitionIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"to": "investigating", "note": "SQS refuses our credentials"}]
        }
    )

    to: State
    severity: Severity | None = Field(
        default=None, description="Required when acknowledging an incident without severity."
    )
    note: str | None = Field(default=None, max_length=2000)


class AcknowledgeIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"severity": "P1", "note": "all accounts affected"}]}
    )

    severity: Severity | None = Field(
        default=None, description="Required unless the incident already has a severity."
    )
    note: str | None = Field(default=None, max_length=2000)


class ClockOut(BaseModel):
    name: Literal["ack", "update", "postmortem"]
    running: bool
    due_at: datetime | None = Field(description="Due time while running, else null.")
    opens_at: datetime | None = None
    overdue: bool


class IncidentOut(BaseModel):
    id: str
    title: str
    service: str
    description: str | None
    impact: str | None
    severity: Severity | None
    major: bool
    state: State
    started_at: datetime
    symptoms: str | None
    steps_to_reproduce: str | None
    evidence_links: list[str]
    stakeholders: list[str]
    impacted_accounts: list[str]
    commander: str | None
    communicator: str | None
    customer_tickets: list[str]
    reported_at: datetime
    acknowledged_at: datetime | None
    investigating_at: datetime | None
    identified_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    last_update_at: datetime | None
    clocks: list[ClockOut]
    overdue: bool
    postmortem_required: bool
    postmortem_recorded: bool
    updated_at: datetime
    version: int


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    next_cursor: str | None


class StatusUpdateIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "template": "identified",
                    "symptoms": "Invitation emails are delayed",
                    "eta": "2026-03-02T11:30:00Z",
                    "accounts": ["acme"],
                }
            ]
        }
    )

    template: Literal["investigating", "identified", "resolved"]
    symptoms: LongText | None = Field(
        default=None, description="Required for investigating and identified."
    )
    eta: UtcTime | None = Field(
        default=None, description="Identified only (required there); investigating: unknown."
    )
    message: LongText | None = Field(default=None, description="Optional extra public text.")
    accounts: list[AccountId] = Field(
        default_factory=list,
        max_length=100,
        description="Accounts this notice names publicly; none unless listed here.",
    )


class StatusUpdateOut(BaseModel):
    id: str
    incident: str
    template: str
    service: str
    symptoms: str | None
    eta: datetime | None
    message: str | None
    accounts: list[str] = Field(
        description="The names the notice shows publicly for the account ids it was given."
    )
    text: str
    posted_at: datetime
    expires_at: datetime | None


class FeedNotice(BaseModel):
    """What the public feed shows: the notice's own fields, nothing from the incident."""

    id: str
    incident: str
    template: str
    service: str
    text: str
    symptoms: str | None
    eta: datetime | None
    accounts: list[str]
    posted_at: datetime
    expires_at: datetime | None


class StatusFeed(BaseModel):
    generated_at: datetime
    notices: list[FeedNotice]


class CommunicationIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account": "acme",
                    "channel": "phone",
                    "recipient": "Olivia Owner",
                    "what": "Explained the delay; invitations go out again from 11:30 UTC",
                    "by": "Colin",
                }
            ]
        }
    )

    account: AccountId
    channel: Literal["direct_email", "in_app", "phone"]
    recipient: ShortText
    what: LongText
    by: ShortText | None = Field(default=None, description="Who (default: the API key id).")
    at: UtcTime | None = Field(default=None, description="When (default: now).")


class CommunicationOut(BaseModel):
    id: str
    incident: str
    account: str
    channel: str
    recipient: str
    by: str
    at: datetime
    what: str
    recorded_at: datetime


class ServiceCredit(StrictModel):
    account: AccountId
    credit: ShortText = Field(description="What is due, e.g. '10% of the March invoice'.")
    note: str | None = Field(default=None, max_length=2000)


class PostmortemIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "findings": "The SQS credentials expired; pushes failed for 2 hours",
                    "improvement_actions": ["Alert on push_error", "Rotate credentials monthly"],
                    "link": "https://wiki.acme.example/postmortems/sqs-credentials",
                    "service_credits": [{"account": "acme", "credit": "10% of the March invoice"}],
                }
            ]
        }
    )

    findings: LongText
    improvement_actions: list[LongText] = Field(min_length=1, max_length=200)
    link: Link | None = Field(default=None, description="Optional: the full write-up.")
    service_credits: list[ServiceCredit] = Field(default_factory=list, max_length=10_000)


class PostmortemOut(BaseModel):
    incident: str
    findings: str
    improvement_actions: list[str]
    link: str | None
    service_credits: list[dict[str, Any]]
    time_to_resolution_seconds: int
    time_to_resolution: str = Field(description="ISO 8601 duration, start to resolved.")
    recorded_at: datetime
    updated_at: datetime
