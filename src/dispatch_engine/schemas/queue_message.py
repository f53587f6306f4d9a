"""The public queue message contract (R-Q-1), read by message vendors.

Vendors consume these messages from SQS, Azure Service Bus or the local queue. The contract
is versioned by the ``schema`` field and documented for vendors by the hand-written JSON
Schema next to this module (``dispatch-engine.invitation.v1.schema.json``); tests keep the two
in agreement. Changing a field here is a breaking change for vendors: add a ``v2`` instead.

Delivery is at least once, so every message carries a stable ``message_id`` to de-duplicate
on. Times are RFC 3339 in UTC with a ``Z`` suffix (``+00:00`` is also accepted on input).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator

__all__ = [
    "JSON_SCHEMA_FILE",
    "PROBE_NOTE",
    "SCHEMA_NAME",
    "EmailRecipient",
    "InvitationMessageV1",
    "ProbeMessageV1",
    "SmsRecipient",
    "build_invitation",
    "build_probe",
    "encode_invitation",
    "encode_message",
    "format_utc",
    "load_json_schema",
]

SCHEMA_NAME: Final = "dispatch-engine.invitation/v1"
PROBE_NOTE: Final = "vendors may ignore probe messages"
JSON_SCHEMA_FILE: Final = Path(__file__).parent / "dispatch-engine.invitation.v1.schema.json"

# RFC 3339 date-time in UTC; seconds fractions up to microseconds (what Python produces).
_UTC_TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)$"
)
# Safe as an SQS MessageDeduplicationId / Service Bus message_id (at most 128 characters).
_MESSAGE_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"


def _utc_timestamp(value: str) -> str:
    if not _UTC_TIMESTAMP.match(value):
        raise ValueError("must be an RFC 3339 time in UTC, e.g. 2026-03-02T09:00:00Z")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a real calendar time") from None
    return value


UtcTimestamp = Annotated[str, AfterValidator(_utc_timestamp)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
MessageId = Annotated[str, Field(pattern=_MESSAGE_ID_PATTERN)]


class _Contract(BaseModel):
    """Vendor-facing models: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class EmailRecipient(_Contract):
    """Where an email invitation goes."""

    email: Annotated[str, Field(min_length=3, max_length=320)]


class SmsRecipient(_Contract):
    """Where an SMS invitation goes (E.164)."""

    mobile: Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$")]


class InvitationMessageV1(_Contract):
    """One survey invitation to send on one channel.

    Every field is required, as in the JSON Schema, so parsing is as strict as the contract;
    build messages with :func:`build_invitation`.
    """

    schema_: Literal["dispatch-engine.invitation/v1"] = Field(alias="schema")
    type: Literal["invitation"]
    message_id: MessageId
    invite_id: Identifier
    token: Identifier
    account: Identifier
    dispatch: Identifier
    questionnaire: Identifier
    channel: Literal["email", "sms"]
    recipient: EmailRecipient | SmsRecipient
    message_template: Identifier
    lineup_position: Annotated[StrictInt, Field(ge=1)]
    lineup_message_id: Identifier
    scheduled_at: UtcTimestamp
    sent_at: UtcTimestamp
    attributes: dict[str, str]
    sandbox: bool
    resend_of: MessageId | None

    @model_validator(mode="after")
    def _recipient_matches_channel(self) -> InvitationMessageV1:
        expected = EmailRecipient if self.channel == "email" else SmsRecipient
        if not isinstance(self.recipient, expected):
            raise ValueError("recipient must carry the address for the message's channel")
        return self


class ProbeMessageV1(_Contract):
    """A connectivity check sent by operators; it invites nobody. Build with :func:`build_probe`."""

    schema_: Literal["dispatch-engine.invitation/v1"] = Field(alias="schema")
    type: Literal["probe"]
    message_id: MessageId
    account: Identifier
    sent_at: UtcTimestamp
    note: Literal["vendors may ignore probe messages"]


def format_utc(value: datetime, name: str = "value") -> str:
    """RFC 3339 in UTC with ``Z``; naive datetimes are refused (their instant is unknown)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def build_invitation(
    *,
    message_id: str,
    invite_id: str,
    token: str,
    account: str,
    dispatch: str,
    questionnaire: str,
    channel: Literal["email", "sms"],
    address: str,
    message_template: str,
    lineup_position: int,
    lineup_message_id: str,
    scheduled_at: datetime,
    sent_at: datetime,
    attributes: Mapping[str, str] | None = None,
    sandbox: bool = False,
    resend_of: str | None = None,
) -> InvitationMessageV1:
    """Build a validated invitation; ``address`` is the email or E.164 mobile for ``channel``."""
    recipient: EmailRecipient | SmsRecipient
    if channel == "email":
        recipient = EmailRecipient(email=address)
    elif channel == "sms":
        recipient = SmsRecipient(mobile=address)
    else:
        raise ValueError("channel must be 'email' or 'sms'")
    return InvitationMessageV1(
        schema_=SCHEMA_NAME,
        type="invitation",
        message_id=message_id,
        invite_id=invite_id,
        token=token,
        account=account,
        dispatch=dispatch,
        questionnaire=questionnaire,
        channel=channel,
        recipient=recipient,
        message_template=message_template,
        lineup_position=lineup_position,
        lineup_message_id=lineup_message_id,
        scheduled_at=format_utc(scheduled_at, "scheduled_at"),
        sent_at=format_utc(sent_at, "sent_at"),
        attributes=dict(attributes or {}),
        sandbox=sandbox,
        resend_of=resend_of,
    )


def encode_invitation(
    *,
    message_id: str,
    invite_id: str,
    token: str,
    account: str,
    dispatch: str,
    questionnaire: str,
    channel: Literal["email", "sms"],
    address: str,
    message_template: str,
    lineup_position: int,
    lineup_message_id: str,
    scheduled_at: str,
    sent_at: str,
    attributes: Mapping[str, str] | None = None,
    sandbox: bool = False,
    resend_of: str | None = None,
) -> bytes:
    """The queue body of an invitation, byte for byte what ``encode_message(build_invitation(
    …))`` gives, without building a validated model (the delivery hot path).

    Every input was validated before it reached the database (addresses at ingest, ids by
    construction); times are given already formatted with :func:`format_utc`, since a whole
    batch shares its ``sent_at``. Tests hold the two encoders equal and validate the output
    against the JSON Schema.
    """
    if channel == "email":
        recipient = {"email": address}
    elif channel == "sms":
        recipient = {"mobile": address}
    else:
        raise ValueError("channel must be 'email' or 'sms'")
    payload = {
        "schema": SCHEMA_NAME,
        "type": "invitation",
        "message_id": message_id,
        "invite_id": invite_id,
        "token": token,
        "account": account,
        "dispatch": dispatch,
        "questionnaire": questionnaire,
        "channel": channel,
        "recipient": recipient,
        "message_template": message_template,
        "lineup_position": lineup_position,
        "lineup_message_id": lineup_message_id,
        "scheduled_at": scheduled_at,
        "sent_at": sent_at,
        "attributes": dict(attributes) if attributes else {},
        "sandbox": sandbox,
        "resend_of": resend_of,
    }
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def build_probe(*, message_id: str, account: str, sent_at: datetime) -> ProbeMessageV1:
    """Build a probe message; ``sent_at`` must be timezone-aware."""
    return ProbeMessageV1(
        schema_=SCHEMA_NAME,
        type="probe",
        message_id=message_id,
        account=account,
        sent_at=format_utc(sent_at, "sent_at"),
        note=PROBE_NOTE,
    )


def encode_message(msg: InvitationMessageV1 | ProbeMessageV1) -> bytes:
    """The message body on the queue: compact JSON, field names as documented, sorted keys.

    Sorted keys make equal messages byte-identical, whatever order attributes arrived in.
    """
    payload = msg.model_dump(mode="json", by_alias=True)
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def load_json_schema() -> dict[str, object]:
    """The vendor-facing JSON Schema, as shipped in the package."""
    loaded = json.loads(JSON_SCHEMA_FILE.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TypeError("the queue message JSON Schema must be an object")
    return loaded
