"""Customer communication log (R-INC-6): per incident and account — channel, recipient,
who, when and what.

The recipient is personal data (an address, a phone number, a name): it is stored sealed
with the field cipher, bound to the row id, and opened only for the API's readers. The
audit log gets a keyed hash of it instead (enough to answer "was this person contacted?"
for someone who knows the address, useless to anyone who reads the log)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import ValidationFailed
from dispatch_engine.models import IncidentCommunication, new_id
from dispatch_engine.schemas.incidents import CommunicationIn, CommunicationOut
from dispatch_engine.security.crypto import FieldCipher
from dispatch_engine.security.hashing import KeyedHasher, keyed_hash
from dispatch_engine.security.sealing import communication_recipient_aad
from dispatch_engine.store.accounts import find_account
from dispatch_engine.store.incidents import communications_of
from dispatch_engine.store.paging import PageRequest


def seal_recipient(cipher: FieldCipher, communication_id: str, recipient: str) -> str:
    return cipher.encrypt(recipient, aad=communication_recipient_aad(communication_id))


def open_recipient(cipher: FieldCipher, communication_id: str, sealed: str) -> str:
    return cipher.decrypt(sealed, aad=communication_recipient_aad(communication_id))


def recipient_hash(hasher: KeyedHasher, recipient: str) -> str:
    """``<key id>:<HMAC>`` of the recipient, whitespace collapsed and case folded."""
    normalized = " ".join(recipient.split()).casefold()
    return keyed_hash(hasher, normalized)


async def record_communication(
    session: AsyncSession,
    incident_id: str,
    body: CommunicationIn,
    now: datetime,
    key_id: str | None,
    cipher: FieldCipher,
) -> IncidentCommunication:
    if await find_account(session, body.account) is None:
        raise ValidationFailed("account", f"unknown account '{body.account}'")
    if body.at is not None and body.at > now:
        raise ValidationFailed("at", "must not be in the future")
    entry_id = new_id("com")
    entry = IncidentCommunication(
        id=entry_id,
        incident_id=incident_id,
        account_id=body.account,
        channel=body.channel,
        recipient=seal_recipient(cipher, entry_id, body.recipient),
        by=body.by or key_id or "unknown",
        at=body.at or now,
        what=body.what,
        recorded_at=now,
        recorded_by=key_id,
    )
    session.add(entry)
    await session.flush()
    return entry


def communication_out(entry: IncidentCommunication, cipher: FieldCipher) -> CommunicationOut:
    return CommunicationOut(
        id=entry.id,
        incident=entry.incident_id,
        account=entry.account_id,
        channel=entry.channel,
        recipient=open_recipient(cipher, entry.id, entry.recipient),
        by=entry.by,
        at=entry.at,
        what=entry.what,
        recorded_at=entry.recorded_at,
    )


def audit_view(out: CommunicationOut, hasher: KeyedHasher) -> dict[str, Any]:
    """What the audit log keeps of a communication: everything but the recipient, which
    becomes ``recipient_hash``."""
    view = out.model_dump(mode="json", exclude={"recipient"})
    view["recipient_hash"] = recipient_hash(hasher, out.recipient)
    return view


async def list_communications(
    session: AsyncSession,
    incident_id: str,
    account: str | None,
    cipher: FieldCipher,
    page: PageRequest,
) -> tuple[list[CommunicationOut], str | None]:
    entries, next_cursor = await communications_of(session, incident_id, account, page)
    return [communication_out(e, cipher) for e in entries], next_cursor
