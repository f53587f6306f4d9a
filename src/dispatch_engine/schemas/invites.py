"""The invite lookup: an invite with its messages' states, times and reasons."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from dispatch_engine.rules.zones import ZoneSource


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
