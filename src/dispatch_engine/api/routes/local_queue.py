"""The `local` queue kind over HTTP: pull messages with a visibility timeout, then ack."""

from __future__ import annotations

from datetime import timedelta

import orjson
from fastapi import APIRouter, Query

from dispatch_engine.api.deps import ConfigActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.queues import local
from dispatch_engine.schemas.local_queue import AckRequest, AckResult, QueuedMessage
from dispatch_engine.services.integrations import require_local_queue

router = APIRouter(prefix="/v1/accounts/{account_id}/queue", tags=["local queue"])


@router.get(
    "/messages",
    response_model=list[QueuedMessage],
    summary="Receive queued messages",
    description=doc(
        """
        The message vendor's side of the `local` queue: up to `max` visible messages, in
        order, each with a `receipt` and its body (the `dispatch-engine.invitation/v1`
        queue message). Received messages stay invisible for `visibility` seconds; ack the
        handled ones with their receipts, the others reappear (delivery is at least once:
        de-duplicate on `message_id`). `backend` and `admin` keys (an operator reads the
        messages' states on the invites instead: receiving hides them from the vendor).
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        422,
        notes={
            409: "`not-local-queue`: the account has no queue integration, or not a `local` one."
        },
    ),
)
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
        received = await local.receive(
            session, account_id, now=now, limit=max, visibility=timedelta(seconds=visibility)
        )
        return [
            QueuedMessage(
                receipt=item.receipt,
                message_id=item.message_id,
                receive_count=item.receive_count,
                enqueued_at=item.enqueued_at,
                body=orjson.loads(item.body),
            )
            for item in received
        ]


@router.post(
    "/ack",
    response_model=AckResult,
    summary="Acknowledge queued messages",
    description=doc(
        """
        Deletes the messages handled, by the receipts of the latest receive; `unknown`
        lists receipts that matched nothing (already acked, or from an earlier receive of
        a message that has been received again since). `backend` and `admin` keys.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            409: "`not-local-queue`: the account has no queue integration, or not a `local` one."
        },
    ),
)
async def ack(
    account_id: str, body: AckRequest, actor: ConfigActor, session: SessionDep
) -> AckResult:
    """Delete handled messages. A receipt from an earlier receive no longer works."""
    async with session.begin():
        await require_local_queue(session, account_id)
        found = await local.ack(session, account_id, body.receipts)
    return AckResult(acked=len(found), unknown=[r for r in body.receipts if r not in found])
