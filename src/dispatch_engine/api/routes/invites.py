"""Invite lookup: every message's state, times, and the rule + reason for anything not sent."""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter, Query

from dispatch_engine.api.deps import ReadActor, SessionDep
from dispatch_engine.api.openapi import doc, problems
from dispatch_engine.errors import NotFound, ValidationFailed
from dispatch_engine.models import Invite, Message
from dispatch_engine.schemas.invites import InviteOut, MessageOut
from dispatch_engine.services.dispatches import get_dispatch
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.invites import find_invite, invites_matching, messages_of_invites

router = APIRouter(prefix="/v1/accounts/{account_id}/invites", tags=["invites"])


def _invite_out(invite: Invite, messages: list[Message]) -> InviteOut:
    return InviteOut(
        id=invite.id,
        account=invite.account_id,
        dispatch=invite.dispatch_id,
        questionnaire=invite.questionnaire_id,
        batch=invite.batch_id,
        external_id=invite.external_id,
        token=invite.token,
        sandbox=invite.sandbox,
        state=invite.state,
        end_reason=invite.end_reason,
        received_at=invite.received_at,
        valid_until=invite.valid_until,
        first_sent_at=invite.first_sent_at,
        responded_at=invite.responded_at,
        contact_erased=invite.contact is None,
        messages=[
            MessageOut(
                id=m.id,
                lineup_message_id=m.lineup_message_id,
                position=m.position,
                channel=m.channel,
                state=m.state,
                rule=m.rule,
                reason=m.reason,
                due_at=m.due_at,
                scheduled_for=m.not_before,
                sent_at=m.sent_at,
                decided_at=m.decided_at,
                attempts=m.attempts,
                resend_of=m.resend_of,
            )
            for m in messages
        ],
    )


async def _with_messages(session: SessionDep, invites: list[Invite]) -> list[InviteOut]:
    by_invite: dict[str, list[Message]] = defaultdict(list)
    if invites:
        for message in await messages_of_invites(session, [i.id for i in invites]):
            by_invite[message.invite_id].append(message)
    return [_invite_out(i, by_invite[i.id]) for i in invites]


@router.get(
    "/{invite_id}",
    response_model=InviteOut,
    summary="Get an invite",
    description=doc(
        """
        One invite (a contact of a dispatch) with its token, state and times, and every
        message of its lineup: state, due and scheduled times, when it was sent or decided,
        push attempts, and for a message not sent the `rule` and `reason` (`responded`,
        `unsubscribed`, `dnd`, `fatigue_pending_token`, `fatigue_max_invites`,
        `token_expired`, `step_deleted`, `deferred_business_hours`, `paused`, …; see
        docs/rule-pipeline.md). `contact_erased` tells whether the contact's details were
        erased (once the invite can send nothing more). Any key that can see the account.
        """
    ),
    responses=problems(401, 404, 422),
)
async def get_invite(
    account_id: str, invite_id: str, actor: ReadActor, session: SessionDep
) -> InviteOut:
    async with session.begin():
        invite = await find_invite(session, invite_id)
        if invite is None or invite.account_id != account_id:
            raise NotFound(f"invite '{invite_id}'")
        return (await _with_messages(session, [invite]))[0]


@router.get(
    "",
    response_model=list[InviteOut],
    summary="Find invites",
    description=doc(
        """
        Invites by `token`, or by `external_id` (the id EM gave the contact), optionally
        within one `dispatch`; oldest first, at most `limit`. Each comes with its messages,
        as in the single invite. One of `token` or `external_id` is required. Any key that
        can see the account.
        """
    ),
    responses=problems(401, 404, 422),
)
async def find_invites(
    account_id: str,
    actor: ReadActor,
    session: SessionDep,
    token: str | None = Query(default=None),
    external_id: str | None = Query(default=None),
    dispatch: str | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[InviteOut]:
    """Find invites by token, or by external id (optionally within one dispatch)."""
    if not token and not external_id:
        raise ValidationFailed("token", "give token or external_id")
    async with session.begin():
        await get_account(session, account_id)  # an unknown account is 404, not "no invites"
        if dispatch:
            await get_dispatch(session, account_id, dispatch)
        invites = await invites_matching(
            session,
            account_id,
            token=token,
            external_id=external_id,
            dispatch_id=dispatch,
            limit=limit,
        )
        return await _with_messages(session, invites)
