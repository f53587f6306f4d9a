"""The `local` queue kind over HTTP: pull messages with a visibility timeout, then ack."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, delete, select, update

from dispatch_engine.api.deps import ConfigActor, SessionDep
from dispatch_engine.db.bulk import member_of
from dispatch_engine.models import LocalQueueMessage
from dispatch_engine.models.base import table_of
from dispatch_engine.schemas.common import StrictModel
from dispatch_engine.services.integrations import require_local_queue

router = APIRouter(prefix="/v1/accounts/{account_id}/queue", tags=["local queue"])


class QueuedMessage(BaseModel):
    receipt: str = Field(description="Pass back to /queue/ack once the message is handled.")
    message_id: str
    receive_count: int
    enqueued_at: datetime
    body: dict[str, Any] = Field(description="The queue message (dispatch-engine.invitation/v1).")


class AckRequest(StrictModel):
    receipts: list[str] = Field(min_length=1, max_length=1000)


class AckResult(BaseModel):
    acked: int
    unknown: list[str] = Field(description="Receipts that were unknown or had expired.")


@router.get("/messages", response_model=list[QueuedMessage])
async def receive(
    account_id: str,
    actor: ConfigActor,
    session: SessionDep,
    max: int = Query(default=10, ge=1, le=1000, description="At most this many messages"),
    visibility: int = Query(
        default=30, ge=0, le=43_200, description="Seconds the messages stay invisible"
    ),
) -> list[QueuedMessage]:
    """Receive visible messages in order; unacked ones reappear after `visibility` seconds.

    The vendor's side of the queue: `backend` and `admin` keys (an operator reads the
    messages' states on the invites instead; receiving here hides them from the vendor)."""
    now = actor.now()
    async with session.begin():
        await require_local_queue(session, account_id)
        query = (
            select(LocalQueueMessage)
            .where(LocalQueueMessage.account_id == account_id, LocalQueueMessage.visible_at <= now)
            .order_by(LocalQueueMessage.visible_at, LocalQueueMessage.id)
            .limit(max)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list((await session.execute(query)).scalars())
        visible_at = now + timedelta(seconds=visibility)
        out = [
            QueuedMessage(
                receipt=secrets.token_urlsafe(24),
                message_id=row.message_id,
                receive_count=row.receive_count + 1,
                enqueued_at=row.enqueued_at,
                body=orjson.loads(row.body),
            )
            for row in rows
        ]
        if out:
            table = table_of(LocalQueueMessage)
            await session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(
                    receipt=bindparam("receipt"),
                    visible_at=visible_at,
                    receive_count=bindparam("count"),
                ),
                [
                    {"b_id": row.id, "receipt": item.receipt, "count": item.receive_count}
                    for row, item in zip(rows, out, strict=True)
                ],
            )
        return out


@router.post("/ack", response_model=AckResult)
async def ack(
    account_id: str, body: AckRequest, actor: ConfigActor, session: SessionDep
) -> AckResult:
    """Delete handled messages. A receipt from an earlier receive no longer works."""
    async with session.begin():
        await require_local_queue(session, account_id)
        found = set(
            (
                await session.execute(
                    select(LocalQueueMessage.receipt).where(
                        LocalQueueMessage.account_id == account_id,
                        member_of(session, LocalQueueMessage.receipt, body.receipts),
                    )
                )
            ).scalars()
        )
        if found:
            await session.execute(
                delete(LocalQueueMessage).where(
                    LocalQueueMessage.account_id == account_id,
                    member_of(session, LocalQueueMessage.receipt, found),
                )
            )
    return AckResult(acked=len(found), unknown=[r for r in body.receipts if r not in found])
