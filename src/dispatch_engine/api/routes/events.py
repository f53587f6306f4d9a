"""`POST /v1/accounts/{account}/events` and operator re-subscribes."""

from __future__ import annotations

from fastapi import APIRouter

from dispatch_engine.api.deps import ConfigActor, OperatorActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.context import AppContext
from dispatch_engine.errors import ValidationFailed
from dispatch_engine.models import Invite
from dispatch_engine.schemas.events import EventIn, EventResult, ResubscribeIn
from dispatch_engine.services import events as service
from dispatch_engine.store.accounts import get_account

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["events"])


@router.post(
    "/events",
    response_model=EventResult,
    summary="Record a response or an unsubscribe",
    description=doc(
        """
        EM reports what a recipient did. `response` (by the invite's `token`): no further
        message of that invite goes out (`messages_stopped` counts them). `unsubscribe`, by
        `token` (every channel the invite has an address for, or only `channel`) or by
        `channel` + `address`: that address gets no message on that channel from this
        account again, until an operator re-subscribes it; kept as a keyed hash only, and it
        works after the contact's details were erased. Replaying an event is harmless
        (`applied: false`). `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401, 403, 404, *BODY, notes={404: "Also when no invite of the account has this token."}
    ),
)
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
        if body.token:
            invite = await service.invite_by_token(session, account_id, body.token)
            blocks = _invite_blocks(actor.context, invite, body.channel)
            invite_id: str | None = invite.id
        else:
            assert body.channel is not None and body.address is not None
            blocks = {
                body.channel: service.address_hashes(actor.context, body.channel, body.address)
            }
            invite_id = None
        applied = False
        for channel, hashes in blocks.items():
            applied |= await service.block_hashes(
                session, account_id, channel, hashes, now, "event"
            )
        actor.audit(
            session,
            "event.unsubscribe",
            "unsubscribe",
            ",".join(blocks),
            account_id=account_id,
            after={"channels": list(blocks), "applied": applied, "invite": invite_id},
        )
        return EventResult(
            type="unsubscribe", applied=applied, invite=invite_id, channels=list(blocks)
        )


def _invite_blocks(
    context: AppContext, invite: Invite, channel: str | None
) -> dict[str, list[str]]:
    """Channel → hashes to block for an unsubscribe by token: the one channel asked for,
    or every channel the invite has an address for."""
    if channel is not None:
        hashes = service.invite_address_hashes(context, invite, channel)
        if not hashes:
            raise ValidationFailed("channel", f"this invite has no address for {channel}")
        return {channel: hashes}
    blocks = {c: service.invite_address_hashes(context, invite, c) for c in ("email", "sms")}
    return {c: hashes for c, hashes in blocks.items() if hashes}


@router.delete(
    "/unsubscribes",
    response_model=EventResult,
    summary="Re-subscribe an address",
    description=doc(
        """
        An operator lifts an unsubscribe: the address may receive messages on that channel
        from this account again (`applied: false` when it was not unsubscribed). The body
        names the `channel` and the `address`. `operator` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, *BODY),
)
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
