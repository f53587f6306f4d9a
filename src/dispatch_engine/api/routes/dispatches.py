"""`/v1/accounts/{account}/dispatches`."""

from __future__ import annotations

from fastapi import APIRouter, Body, Header, Response, status

from dispatch_engine.api.deps import (
    ConfigActor,
    ControlActor,
    ReadActor,
    SessionDep,
)
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.incidents.service import check_incident_reference
from dispatch_engine.schemas.dispatches import (
    DispatchCreate,
    DispatchOut,
    DispatchPatch,
    DispatchStats,
    PauseRequest,
)
from dispatch_engine.services import dispatches as service
from dispatch_engine.services.etags import check_if_match, etag
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.dispatches import invite_state_counts, message_outcome_counts
from dispatch_engine.store.policies import live_lineup

router = APIRouter(prefix="/v1/accounts/{account_id}/dispatches", tags=["dispatches"])
VALIDITY = (
    "`token-validity-too-short` when the token validity does not outlast the lineup's total "
    "delay (`total_delay` tells it)."
)


@router.get(
    "",
    response_model=list[DispatchOut],
    summary="List dispatches",
    description="The account's dispatches with their status, pause reason and templates "
    "(`missing_templates` lists lineup messages still without one). Any key that can see "
    "the account.",
    responses=problems(401, 404, 422),
)
async def list_dispatches(
    account_id: str, actor: ReadActor, session: SessionDep, pager: PagerDep
) -> list[DispatchOut]:
    """The account's dispatches, oldest first."""
    async with session.begin():
        await get_account(session, account_id)
        dispatches, next_cursor = await service.list_dispatches(session, account_id, pager.page)
    pager.next_page(next_cursor)
    return [service.dispatch_out(d, lineup) for d, lineup in dispatches]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DispatchOut,
    summary="Create a dispatch",
    description=doc(
        """
        Sends one questionnaire through one policy: the `questionnaire_id`, the
        `policy_id`, the `token_validity` (how long each invite's survey link stays valid;
        it must be longer than the lineup's total delay, so the link still works after the
        last message) and a `message_templates` entry (an id the vendor understands) for
        every lineup message. Contacts are then posted to it. Answers 201 with `ETag` and
        `Location`. `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, *BODY, notes={422: "Also " + VALIDITY}),
)
async def create_dispatch(
    account_id: str,
    body: DispatchCreate,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
) -> DispatchOut:
    """Create a dispatch. The token validity must be longer than the lineup's total delay."""
    async with session.begin():
        dispatch, lineup = await service.create_dispatch(session, account_id, body, actor.now())
        out = service.dispatch_out(dispatch, lineup)
        actor.audit(
            session,
            "dispatch.create",
            "dispatch",
            dispatch.id,
            account_id=account_id,
            after=out.model_dump(mode="json"),
        )
    response.headers["ETag"] = etag(out.version)
    response.headers["Location"] = f"/v1/accounts/{account_id}/dispatches/{out.id}"
    return out


@router.get(
    "/{dispatch_id}",
    response_model=DispatchOut,
    summary="Get a dispatch",
    description="The dispatch with its status (`active` or `paused`, with the reason), "
    "templates and `missing_templates`; the `ETag` header is the version for `If-Match`. "
    "Any key that can see the account.",
    responses=problems(401, 404, 422),
)
async def get_dispatch(
    account_id: str, dispatch_id: str, actor: ReadActor, session: SessionDep, response: Response
) -> DispatchOut:
    async with session.begin():
        dispatch = await service.get_dispatch(session, account_id, dispatch_id)
        out = service.dispatch_out(dispatch, await live_lineup(session, dispatch.policy_id))
    response.headers["ETag"] = etag(out.version)
    return out


@router.patch(
    "/{dispatch_id}",
    response_model=DispatchOut,
    summary="Edit a dispatch",
    description=doc(
        """
        Moves the dispatch to another policy, changes its token validity, or adds and
        removes message templates (`message_templates` merges; a `null` value removes that
        entry). This is how a dispatch paused by a lineup change or a deleted policy gets
        what it needs before it is resumed. Conditional with `If-Match` (412 when stale).
        `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, 412, *BODY, notes={422: "Also " + VALIDITY}),
)
async def patch_dispatch(
    account_id: str,
    dispatch_id: str,
    body: DispatchPatch,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = Header(default=None),
) -> DispatchOut:
    """Move to another policy, change validity, add or remove templates (If-Match optional)."""
    async with session.begin():
        dispatch = await service.get_dispatch(session, account_id, dispatch_id, lock=True)
        check_if_match(if_match, dispatch.version)
        before = service.dispatch_snapshot(dispatch, await live_lineup(session, dispatch.policy_id))
        lineup = await service.patch_dispatch(
            session, dispatch, body.model_dump(exclude_unset=True), actor.now()
        )
        out = service.dispatch_out(dispatch, lineup)
        actor.audit(
            session,
            "dispatch.update",
            "dispatch",
            dispatch.id,
            account_id=account_id,
            before=before,
            after=out.model_dump(mode="json"),
        )
    response.headers["ETag"] = etag(out.version)
    return out


@router.get(
    "/{dispatch_id}/stats",
    response_model=DispatchStats,
    summary="Count a dispatch's outcomes",
    description="Invites by state and messages by state, each with a `total`, and for "
    "messages not sent the count per reason (`responded`, `unsubscribed`, "
    "`fatigue_pending_token`, `deferred_business_hours`, …). Any key that can see the "
    "account.",
    responses=problems(401, 404, 422),
)
async def dispatch_stats(
    account_id: str, dispatch_id: str, actor: ReadActor, session: SessionDep
) -> DispatchStats:
    """Counts by outcome, from indexed aggregates (index-only scans on PostgreSQL)."""
    async with session.begin():
        await service.get_dispatch(session, account_id, dispatch_id)
        invite_rows = await invite_state_counts(session, dispatch_id)
        message_rows = await message_outcome_counts(session, dispatch_id)
    invites = {state: count for state, count in invite_rows}
    messages: dict[str, int] = {}
    reasons: dict[str, dict[str, int]] = {}
    for state, reason, count in message_rows:
        messages[state] = messages.get(state, 0) + count
        if reason:
            reasons.setdefault(state, {})[reason] = count
    invites["total"] = sum(invites.values())
    messages["total"] = sum(messages.values())
    return DispatchStats(dispatch=dispatch_id, invites=invites, messages=messages, reasons=reasons)


@router.post(
    "/{dispatch_id}/pause",
    response_model=DispatchOut,
    summary="Pause a dispatch",
    description=doc(
        """
        Pauses this dispatch only (other dispatches of its policy go on): its messages are
        held, not dropped, until it is resumed. The optional body's `reason` is shown as the
        pause reason and, with `incident` (an id from `/v1/incidents`), kept in the audit
        log. Any key that can see the account.
        """
    ),
    responses=problems(
        401, 404, *BODY, notes={422: "Also an `incident` that is not a known incident id."}
    ),
)
async def pause_dispatch(
    account_id: str,
    dispatch_id: str,
    actor: ControlActor,
    session: SessionDep,
    body: PauseRequest | None = Body(default=None),
) -> DispatchOut:
    """Pause this dispatch only; its messages are held, not dropped."""
    request = body or PauseRequest()
    async with session.begin():
        dispatch = await service.get_dispatch(session, account_id, dispatch_id, lock=True)
        await check_incident_reference(session, request.incident)
        before = {"status": dispatch.status, "pause_reason": dispatch.pause_reason}
        service.pause_dispatch(dispatch, request.reason, actor.now())
        actor.audit(
            session,
            "dispatch.pause",
            "dispatch",
            dispatch.id,
            account_id=account_id,
            before=before,
            incident=request.incident,
            after={"status": dispatch.status, "pause_reason": dispatch.pause_reason},
        )
        return service.dispatch_out(dispatch, await live_lineup(session, dispatch.policy_id))


@router.post(
    "/{dispatch_id}/resume",
    response_model=DispatchOut,
    summary="Resume a dispatch",
    description=doc(
        """
        Re-enables the dispatch, whatever paused it (an operator, a lineup change, a deleted
        policy, a validity too short): held messages go out subject to the rules at this
        time. Refused while it still cannot run. Optional `reason` and `incident` as for
        pause. Any key that can see the account.
        """
    ),
    responses=problems(
        401,
        404,
        409,
        *BODY,
        notes={
            409: "`dispatch-not-resumable`: its policy was deleted (move it first), or "
            "`missing_templates` lists lineup messages without a template.",
            422: "Also " + VALIDITY + " Or an `incident` that is not a known incident id.",
        },
    ),
)
async def resume_dispatch(
    account_id: str,
    dispatch_id: str,
    actor: ControlActor,
    session: SessionDep,
    body: PauseRequest | None = Body(default=None),
) -> DispatchOut:
    """Re-enable; refused (409) while a template is missing, the policy is deleted or the
    token validity is too short for the lineup."""
    request = body or PauseRequest()
    async with session.begin():
        dispatch = await service.get_dispatch(session, account_id, dispatch_id, lock=True)
        await check_incident_reference(session, request.incident)
        before = {"status": dispatch.status, "pause_reason": dispatch.pause_reason}
        lineup = await service.resume_dispatch(session, dispatch, actor.now())
        actor.audit(
            session,
            "dispatch.resume",
            "dispatch",
            dispatch.id,
            account_id=account_id,
            before=before,
            incident=request.incident,
            after={"status": dispatch.status, "pause_reason": None},
        )
        return service.dispatch_out(dispatch, lineup)
