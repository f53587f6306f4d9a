"""Invite lookup: every message's state, times, and the rule + reason for anything not sent."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from dispatch_engine.api.content_type import wants_csv
from dispatch_engine.api.deps import ReadActor, SessionDep
from dispatch_engine.api.openapi import doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.errors import NotFound, ValidationFailed
from dispatch_engine.models import Invite, Message, MessageDecision
from dispatch_engine.rules.zones import window_zone
from dispatch_engine.schemas.common import UtcTime
from dispatch_engine.schemas.invites import DecisionOut, InviteOut, MessageOut
from dispatch_engine.schemas.policies import BusinessRules
from dispatch_engine.services.dispatches import get_dispatch
from dispatch_engine.services.invite_report import stream_invites_csv
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.decisions import decisions_of_invites
from dispatch_engine.store.invites import (
    InviteFilter,
    business_rules_of_dispatches,
    find_invite,
    invites_page,
    messages_of_invites,
)

router = APIRouter(prefix="/v1/accounts/{account_id}/invites", tags=["invites"])


def _message_out(message: Message, trace: list[MessageDecision] | None) -> MessageOut:
    out = MessageOut(
        id=message.id,
        lineup_message_id=message.lineup_message_id,
        position=message.position,
        channel=message.channel,
        state=message.state,
        rule=message.rule,
        reason=message.reason,
        due_at=message.due_at,
        scheduled_for=message.not_before,
        sent_at=message.sent_at,
        decided_at=message.decided_at,
        attempts=message.attempts,
        resend_of=message.resend_of,
    )
    if trace is not None:  # set only when asked: the list leaves the key out otherwise
        out.decisions = [
            DecisionOut(
                at=d.at,
                kind=d.kind,
                rule=d.rule,
                reason=d.reason,
                until=d.until,
                policy_version=d.policy_version,
                worker=d.worker,
            )
            for d in trace
        ]
    return out


def _invite_out(
    invite: Invite,
    messages: list[Message],
    rules: BusinessRules,
    traces: dict[str, list[MessageDecision]] | None,
) -> InviteOut:
    zone, source = window_zone(
        rules.time_zone, rules.use_contact_time_zone, invite.time_zone, invite.time_zone_source
    )
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
        time_zone=zone,
        time_zone_source=source,
        first_sent_at=invite.first_sent_at,
        responded_at=invite.responded_at,
        contact_erased=invite.contact is None,
        messages=[
            _message_out(m, None if traces is None else traces.get(m.id, [])) for m in messages
        ],
    )


async def _with_messages(
    session: SessionDep, invites: list[Invite], *, trace: bool
) -> list[InviteOut]:
    """The invites with their messages (and, with `trace`, each message's decisions): a
    fixed number of queries whatever the number of invites."""
    by_invite: dict[str, list[Message]] = defaultdict(list)
    rules: dict[str, BusinessRules] = {}
    traces: dict[str, list[MessageDecision]] | None = {} if trace else None
    if invites:
        ids = [i.id for i in invites]
        for message in await messages_of_invites(session, ids):
            by_invite[message.invite_id].append(message)
        if traces is not None:
            for decision in await decisions_of_invites(session, ids):
                traces.setdefault(decision.message_id, []).append(decision)
        stored = await business_rules_of_dispatches(session, list({i.dispatch_id for i in invites}))
        rules = {dispatch: BusinessRules.model_validate(r) for dispatch, r in stored.items()}
    default = BusinessRules()
    return [
        _invite_out(i, by_invite[i.id], rules.get(i.dispatch_id, default), traces) for i in invites
    ]


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
        `token_expired`, `too_late`, `step_deleted`, `deferred_business_hours`, `paused`, …; see
        docs/rule-pipeline.md). `time_zone` is the zone its business windows are read in
        and `time_zone_source` where it comes from (`contact`, `phone_country` or
        `policy`). `contact_erased` tells whether the contact's details were erased (once
        the invite can send nothing more). Each message carries its `decisions`, the
        decision trace in order: sent, deferred (and until when), held, suppressed, re-timed
        by a policy edit, released by a resume, failed in the queue, each with its rule,
        reason, time, policy version and worker (kept `DISPATCH_DECISION_RETENTION_DAYS`;
        see docs/decisions.md). Any key that can see the account.
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
        return (await _with_messages(session, [invite], trace=True))[0]


InviteState = Literal["active", "completed", "ended", "expired"]


@router.get(
    "",
    response_model=list[InviteOut],
    summary="List and find invites; the dispatch report as CSV",
    description=doc(
        """
        The account's invites in id order (upload by upload, oldest first; within one
        upload not the file's row order: `batch` and `row` say where each came from), a
        page at a time (`limit`, `cursor`; the next page is in the `Link` and
        `X-Next-Cursor` headers).
        Filters combine: `token`, `external_id` (the id EM gave the contact), `dispatch`,
        `batch` (one contact file), `state`, `reason` (the invite's end reason or any of
        its messages' reasons) and `since`/`until` (when EM gave the contact). Each invite
        comes with its messages, as in the single invite, without their decision trace
        unless `trace=true` (it is left out to keep pages light).

        With `Accept: text/csv` (or `format=csv`) and a `dispatch`: every matching invite
        of the dispatch as streamed CSV, one line per message with its state, rule and
        reason — the "who was not sent and why" report (no addresses, no tokens). Any key
        that can see the account.
        """
    ),
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **problems(401, 404, 422),
    },
    response_model_exclude_unset=True,
)
async def find_invites(
    account_id: str,
    request: Request,
    actor: ReadActor,
    session: SessionDep,
    pager: PagerDep,
    token: str | None = Query(default=None, max_length=64),
    external_id: str | None = Query(default=None, max_length=200),
    dispatch: str | None = Query(default=None, max_length=32),
    batch: str | None = Query(default=None, max_length=32),
    state: InviteState | None = None,
    reason: str | None = Query(
        default=None,
        max_length=200,
        description="The invite's end reason or any of its messages' reasons "
        "(e.g. `unsubscribed`, `fatigue_max_invites`, `dnd`).",
    ),
    since: UtcTime | None = Query(default=None, description="Received at or after"),
    until: UtcTime | None = Query(default=None, description="Received before"),
    format: Literal["json", "csv"] | None = Query(
        default=None, description="Overrides the Accept header (text/csv → CSV)."
    ),
    trace: bool = Query(
        default=False,
        description="Include each message's `decisions` (the decision trace), as the "
        "single invite always does.",
    ),
) -> Any:
    """The account's invites, in id order (upload by upload), a page at a time; filters
    combine. With `Accept: text/csv` (or `format=csv`) and a `dispatch`, the whole matching
    list as streamed CSV, one line per message: the "who was not sent and why" report."""
    where = InviteFilter(
        account_id, token, external_id, dispatch, batch, state, reason, since, until
    )
    csv = wants_csv(request, format)
    if csv and not dispatch:
        raise ValidationFailed("dispatch", "the CSV report is of one dispatch: give `dispatch`")
    async with session.begin():
        await get_account(session, account_id)  # an unknown account is 404, not "no invites"
        if dispatch:
            await get_dispatch(session, account_id, dispatch)
        if not csv:
            invites, next_cursor = await invites_page(session, where, pager.page)
            pager.next_page(next_cursor)
            return await _with_messages(session, invites, trace=trace)
    return StreamingResponse(
        stream_invites_csv(actor.context.sessions, where),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{dispatch}-invites.csv"'},
    )
