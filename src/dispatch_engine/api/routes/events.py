"""`POST /v1/accounts/{account}/events` and operator re-subscribes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from dispatch_engine.api.deps import ConfigActor, OperatorActor, SessionDep
from dispatch_engine.schemas.common import StrictModel
from dispatch_engine.services import events as service
from dispatch_engine.services.policies import get_account

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["events"])


class EventIn(StrictModel):
    """`response` by token; `unsubscribe` by token (+ channel) or by channel + address."""

    type: Literal["response", "unsubscribe"]
    token: str | None = Field(default=None, max_length=100)
    channel: Literal["email", "sms"] | None = None
    address: str | None = Field(default=None, max_length=320)

    @model_validator(mode="after")
    def _shape(self) -> EventIn:
        if self.type == "response" and not self.token:
            raise ValueError("a response event needs the invite's token")
        if self.type == "unsubscribe":
            if not self.channel:
                raise ValueError("an unsubscribe event needs a channel (email or sms)")
            if not self.token and not self.address:
                raise ValueError("an unsubscribe event needs a token or an address")
        return self


class EventResult(BaseModel):
    type: str
    applied: bool = Field(description="False when the event was already recorded (replay).")
    invite: str | None = None
    messages_stopped: int = 0


class ResubscribeIn(StrictModel):
    channel: Literal["email", "sms"]
    address: str = Field(max_length=320)


@router.post("/events", response_model=EventResult)
async def post_event(
    account_id: str, body: EventIn, actor: ConfigActor, session: SessionDep
) -> EventResult:
    """Record a response or an unsubscribe. Replaying an event is harmless."""
    now = actor.now()
    async with session.begin():
        await get_account(session, account_id)
        if body.type == "response":
            assert body.token is not None
            invite, stopped, applied = await service.record_response(
                session, account_id, body.token, now
            )
            actor.audit(
                session,
                "event.response",
                "invite",
                invite.id,
                account_id=account_id,
                after={"messages_stopped": stopped, "applied": applied},
            )
            return EventResult(
                type="response", applied=applied, invite=invite.id, messages_stopped=stopped
            )
        assert body.channel is not None
        address = body.address
        invite_id = None
        if body.token:
            invite = await service.invite_by_token(session, account_id, body.token)
            invite_id = invite.id
            address = await service.address_of_token(
                actor.context, session, account_id, body.token, body.channel
            )
        assert address is not None
        applied = await service.unsubscribe(
            actor.context, session, account_id, body.channel, address, now, "event"
        )
        actor.audit(
            session,
            "event.unsubscribe",
            "unsubscribe",
            body.channel,
            account_id=account_id,
            after={"channel": body.channel, "applied": applied, "invite": invite_id},
        )
        return EventResult(type="unsubscribe", applied=applied, invite=invite_id)


@router.delete("/unsubscribes", response_model=EventResult)
async def resubscribe(
    account_id: str, body: ResubscribeIn, actor: OperatorActor, session: SessionDep
) -> EventResult:
    """Operator re-subscribe: the address may receive that channel again (audited)."""
    async with session.begin():
        await get_account(session, account_id)
        removed = await service.resubscribe(
            actor.context, session, account_id, body.channel, body.address
        )
        actor.audit(
            session,
            "unsubscribe.delete",
            "unsubscribe",
            body.channel,
            account_id=account_id,
            after={"channel": body.channel, "removed": removed},
        )
    return EventResult(type="resubscribe", applied=removed)
