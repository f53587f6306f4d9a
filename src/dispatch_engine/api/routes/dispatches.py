"""`/v1/accounts/{account}/dispatches`."""

from __future__ import annotations

from fastapi import APIRouter, Body, Header, Response, status

from dispatch_engine.api.deps import (
    ConfigActor,
    ControlActor,
    ReadActor,
    SessionDep,
)
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


@router.get("", response_model=list[DispatchOut])
async def list_dispatches(
    account_id: str, actor: ReadActor, session: SessionDep
) -> list[DispatchOut]:
    async with session.begin():
        await get_account(session, account_id)
        return [
            service.dispatch_out(d, lineup)
            for d, lineup in await service.list_dispatches(session, account_id)
        ]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DispatchOut)
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


@router.get("/{dispatch_id}", response_model=DispatchOut)
async def get_dispatch(
    account_id: str, dispatch_id: str, actor: ReadActor, session: SessionDep, response: Response
) -> DispatchOut:
    async with session.begin():
        dispatch = await service.get_dispatch(session, account_id, dispatch_id)
        out = service.dispatch_out(dispatch, await live_lineup(session, dispatch.policy_id))
    response.headers["ETag"] = etag(out.version)
    return out


@router.patch("/{dispatch_id}", response_model=DispatchOut)
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


@router.get("/{dispatch_id}/stats", response_model=DispatchStats)
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


@router.post("/{dispatch_id}/pause", response_model=DispatchOut)
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


@router.post("/{dispatch_id}/resume", response_model=DispatchOut)
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
