"""Customer communication log (R-INC-6): per incident and account — channel, recipient,
who, when and what."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.errors import ValidationFailed
from dispatch_engine.incidents.schemas import CommunicationIn, CommunicationOut
from dispatch_engine.models import Account, IncidentCommunication, new_id


async def record_communication(
    session: AsyncSession,
    incident_id: str,
    body: CommunicationIn,
    now: datetime,
    key_id: str | None,
) -> IncidentCommunication:
    if await session.get(Account, body.account) is None:
        raise ValidationFailed("account", f"unknown account '{body.account}'")
    if body.at is not None and body.at > now:
        raise ValidationFailed("at", "must not be in the future")
    entry = IncidentCommunication(
        id=new_id("com"),
        incident_id=incident_id,
        account_id=body.account,
        channel=body.channel,
        recipient=body.recipient,
        by=body.by or key_id or "unknown",
        at=body.at or now,
        what=body.what,
        recorded_at=now,
        recorded_by=key_id,
    )
    session.add(entry)
    await session.flush()
    return entry


def communication_out(entry: IncidentCommunication) -> CommunicationOut:
    return CommunicationOut(
        id=entry.id,
        incident=entry.incident_id,
        account=entry.account_id,
        channel=entry.channel,
        recipient=entry.recipient,
        by=entry.by,
        at=entry.at,
        what=entry.what,
        recorded_at=entry.recorded_at,
    )


async def list_communications(
    session: AsyncSession, incident_id: str, account: str | None
) -> list[CommunicationOut]:
    query = select(IncidentCommunication).where(IncidentCommunication.incident_id == incident_id)
    if account:
        query = query.where(IncidentCommunication.account_id == account)
    query = query.order_by(
        IncidentCommunication.account_id, IncidentCommunication.at, IncidentCommunication.id
    )
    return [communication_out(e) for e in (await session.execute(query)).scalars()]
