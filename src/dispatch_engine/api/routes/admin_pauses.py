"""`/v1/admin/pauses`: operators hold a dispatch, a policy, a whole account, or a channel
for every account. Each is a record of its own (with its incident reference), lifted by
DELETE; a dispatch's or policy's own pause/resume endpoints are the other way in."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response, status

from dispatch_engine.api.deps import OperatorActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.errors import Conflict, NotFound
from dispatch_engine.incidents.service import check_incident_reference
from dispatch_engine.models import Dispatch, OperatorPause, Policy, new_id
from dispatch_engine.schemas.pauses import PauseIn, PauseOut, Scope
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.dispatches import find_dispatch
from dispatch_engine.store.pauses import (
    active_pause_of,
    find_pause,
    pauses_matching,
    release_held_by_pause,
)
from dispatch_engine.store.policies import find_policy

router = APIRouter(prefix="/v1/admin/pauses", tags=["pauses"])


def _out(pause: OperatorPause) -> PauseOut:
    return PauseOut.model_validate(pause, from_attributes=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PauseOut,
    summary="Pause sending",
    description=doc(
        """
        Holds at once every message in scope: one `dispatch`, one `policy`, a whole
        `account`, or a `channel` (`email` or `sms`) for every account, e.g. while an SMS
        vendor is down. Held messages (state `held`) are neither lost nor sent; lifting the
        pause releases them through the rules of that time. Give the `incident` (an id from
        `/v1/incidents`) so the audit log ties the pause to it. `operator` and `admin`
        keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            404: "The dispatch, policy or account named by `target`.",
            409: "`already-paused`: a pause of this target is in force (`pause` names it).",
            422: "Also an `incident` that is not a known incident id.",
        },
    ),
)
async def create_pause(body: PauseIn, actor: OperatorActor, session: SessionDep) -> PauseOut:
    """Hold every message in scope at once (state `held`); nothing is lost or sent."""
    async with session.begin():
        account_id = await _account_of_target(session, body.scope, body.target)
        await check_incident_reference(session, body.incident)
        active = await active_pause_of(session, body.scope, body.target)
        if active is not None:
            raise Conflict(
                f"{body.scope} '{body.target}' is already paused by {active.id}",
                slug="already-paused",
                pause=active.id,
            )
        pause = OperatorPause(
            id=new_id("pau"),
            scope=body.scope,
            target=body.target,
            incident=body.incident,
            reason=body.reason,
            created_at=actor.now(),
            created_by=actor.principal.key_id,
        )
        session.add(pause)
        await session.flush()
        out = _out(pause)
        actor.audit(
            session,
            "pause.create",
            "pause",
            pause.id,
            account_id=account_id,
            incident=body.incident,
            after=out.model_dump(mode="json"),
        )
    return out


@router.get(
    "",
    response_model=list[PauseOut],
    summary="List pauses",
    description="The pauses in force, oldest first (lifted ones too with "
    "`include_lifted=true`); filter by `scope`, `target` and `incident`, which combine. "
    "`operator` and `admin` keys.",
    responses=problems(401, 403, 422),
)
async def list_pauses(
    actor: OperatorActor,
    session: SessionDep,
    include_lifted: bool = Query(default=False),
    scope: Scope | None = Query(default=None),
    target: str | None = Query(default=None, max_length=64),
    incident: str | None = Query(default=None, max_length=64),
    *,
    pager: PagerDep,
) -> list[PauseOut]:
    """Pauses in force (all of them with `include_lifted`), oldest first; filters combine."""
    async with session.begin():
        pauses, next_cursor = await pauses_matching(
            session,
            include_lifted=include_lifted,
            scope=scope,
            target=target,
            incident=incident,
            page=pager.page,
        )
    pager.next_page(next_cursor)
    return [_out(p) for p in pauses]


@router.delete(
    "/{pause_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Lift a pause",
    description=doc(
        """
        Ends the pause: the messages it held are decided again at once and go out subject
        to the rules at that time (unless another pause still holds them). Lifting a lifted
        pause changes nothing. `operator` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, 422),
)
async def lift_pause(pause_id: str, actor: OperatorActor, session: SessionDep) -> Response:
    """Resume: held messages go out subject to the rules at that time."""
    async with session.begin():
        pause = await find_pause(session, pause_id)
        if pause is None:
            raise NotFound(f"pause '{pause_id}'")
        if pause.lifted_at is None:
            before = _out(pause).model_dump(mode="json")
            pause.lifted_at = actor.now()
            pause.lifted_by = actor.principal.key_id
            await session.flush()
            await release_held_by_pause(session, actor.now(), pause)
            actor.audit(
                session,
                "pause.lift",
                "pause",
                pause.id,
                account_id=await _lifted_account(session, pause),
                incident=pause.incident,
                before=before,
                after=_out(pause).model_dump(mode="json"),
            )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _account_of_target(session: SessionDep, scope: str, target: str) -> str | None:
    """The account a new pause belongs to (None for a channel); 404 for an unknown target."""
    if scope == "channel":
        return None
    if scope == "account":
        return (await get_account(session, target)).id
    found = await _target_row(session, scope, target)
    if found is None or (isinstance(found, Policy) and found.deleted_at is not None):
        raise NotFound(f"{scope} '{target}'")
    return found.account_id


async def _target_row(session: SessionDep, scope: str, target: str) -> Dispatch | Policy | None:
    if scope == "dispatch":
        return await find_dispatch(session, target)
    if scope == "policy":
        return await find_policy(session, target)
    return None


async def _lifted_account(session: SessionDep, pause: OperatorPause) -> str | None:
    """The account a lifted pause belonged to (its target may have been deleted since)."""
    if pause.scope == "account":
        return pause.target
    row = await _target_row(session, pause.scope, pause.target)
    return row.account_id if row is not None else None
