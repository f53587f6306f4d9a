"""The invite lookup: an invite with its messages' states, times and reasons."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from dispatch_engine.rules.zones import ZoneSource

DecisionKind = Literal["sent", "deferred", "held", "suppressed", "retimed", "released", "failed"]


class DecisionOut(BaseModel):
    """One decision on a message, as the trace recorded it (docs/decisions.md)."""

    at: datetime = Field(description="When it was decided.")
    kind: DecisionKind = Field(
        description="What was decided: `sent`, `deferred` (until `until`), `held` (paused), "
        "`suppressed`, `retimed` (a policy edit moved it to `until`), `released` (a resume "
        "let it go, looked at again from `until`) or `failed` (the queue push was given up).",
        examples=["deferred"],
    )
    rule: str | None = Field(
        description="The rule that decided (`business_window`, `dnd`, `paused`, "
        "`fatigue`, `queue`, `lineup_edit`, …); none for a send.",
        examples=["business_window"],
    )
    reason: str | None = Field(
        description="Why, as a slug (`deferred_business_hours`, `unsubscribed`, "
        "`delay_changed`, `resumed`, `push_failed`, …); none for a send.",
        examples=["deferred_business_hours"],
    )
    until: datetime | None = Field(
        description="The time it was deferred or moved to (deferred, retimed, released)."
    )
    policy_version: int | None = Field(
        description="The version of the policy in force when it was decided.", examples=[3]
    )
    worker: str | None = Field(
        description="The worker that decided (its `DISPATCH_WORKER_ID`); none for an API "
        "request (an edit, a resume, an event)."
    )


class MessageOut(BaseModel):
    id: str
    lineup_message_id: str
    position: int
    channel: str
    state: str
    rule: str | None
    reason: str | None
    due_at: datetime
    scheduled_for: datetime
    sent_at: datetime | None
    decided_at: datetime | None
    attempts: int
    resend_of: str | None
    decisions: list[DecisionOut] | None = Field(
        default=None,
        description="The message's decision trace, oldest first: always in the single "
        "invite, in the list only with `trace=true` (absent otherwise). Kept for "
        "`DISPATCH_DECISION_RETENTION_DAYS`.",
    )


class InviteOut(BaseModel):
    id: str
    account: str
    dispatch: str
    questionnaire: str
    batch: str | None
    external_id: str | None
    token: str
    sandbox: bool
    state: str
    end_reason: str | None
    received_at: datetime
    valid_until: datetime
    time_zone: str = Field(
        description="The zone this invite's business windows are read in.",
        examples=["Europe/Paris"],
    )
    time_zone_source: ZoneSource = Field(
        description="Where `time_zone` comes from: `contact` (the contact file's "
        "`time_zone`), `phone_country` (the one zone of the mobile number's country) or "
        "`policy` (the policy's zone: `use_contact_time_zone` off, or no contact zone). "
        "Follows the policy of the invite's dispatch as it is now.",
        examples=["phone_country"],
    )
    first_sent_at: datetime | None
    responded_at: datetime | None
    contact_erased: bool
    messages: list[MessageOut]
