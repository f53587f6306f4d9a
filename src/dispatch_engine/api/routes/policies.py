"""`/v1/accounts/{account}/policies`: Delivery Policies and their lineup."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Header, Path, Response, status

from dispatch_engine.api.deps import (
    Actor,
    ConfigActor,
    ControlActor,
    ReadActor,
    SessionDep,
)
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.incidents.service import check_incident_reference
from dispatch_engine.models import Policy
from dispatch_engine.schemas.dispatches import PauseRequest
from dispatch_engine.schemas.durations import parse_delay
from dispatch_engine.schemas.policies import (
    LineupInsert,
    LineupPatch,
    PolicyCreate,
    PolicyOut,
    PolicyPatch,
    PolicyVersionOut,
    PolicyVersionSummary,
)
from dispatch_engine.services import policies as service
from dispatch_engine.services.etags import check_if_match, check_version, etag
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.policies import live_lineup, live_lineups, live_policies_of_account

router = APIRouter(prefix="/v1/accounts/{account_id}/policies", tags=["policies"])
IfMatch = Header(default=None, description='The policy\'s current ETag, e.g. "3".')


async def _out(
    session: SessionDep, policy: Policy, response: Response, paused: list[str] | None = None
) -> PolicyOut:
    out = service.policy_out(policy, await live_lineup(session, policy.id), paused)
    response.headers["ETag"] = etag(policy.version)
    return out


async def _record(
    actor: Actor,
    session: SessionDep,
    action: str,
    policy: Policy,
    before: dict[str, object] | None,
    *,
    after: dict[str, object] | None = None,
    incident: str | None = None,
) -> None:
    """The one place every change of a policy ends: its audit record (`after` defaults to
    the policy's snapshot) and its new version (number = `policy.version`), in the
    change's transaction."""
    lineup = await live_lineup(session, policy.id)
    actor.audit(
        session,
        action,
        "policy",
        policy.id,
        account_id=policy.account_id,
        before=before,
        after=service.policy_snapshot(policy, lineup) if after is None else after,
        incident=incident,
    )
    service.record_version(session, policy, lineup, action, actor.principal.key_id, actor.now())


async def _snapshot(session: SessionDep, policy: Policy) -> dict[str, object]:
    return service.policy_snapshot(policy, await live_lineup(session, policy.id))


@router.get(
    "",
    response_model=list[PolicyOut],
    response_model_exclude_none=True,
    summary="List policies",
    description="The account's live (not deleted) policies, each with its lineup and the "
    "checks that apply to every lineup message; the sandbox policy comes first. Any key "
    "that can see the account.",
    responses=problems(401, 404, 422),
)
async def list_policies(
    account_id: str, actor: ReadActor, session: SessionDep, pager: PagerDep
) -> list[PolicyOut]:
    """Live policies; the sandbox policy comes first, then by creation."""
    async with session.begin():
        await get_account(session, account_id)
        policies, next_cursor = await live_policies_of_account(session, account_id, pager.page)
        lineups = await live_lineups(session, [p.id for p in policies])
    pager.next_page(next_cursor)
    return [service.policy_out(p, lineups[p.id]) for p in policies]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Create a policy",
    description=doc(
        """
        Creates a Delivery Policy: a name unique in the account (case-insensitive), the
        **lineup** (message 1's delay counts from when the contact file arrives, 0 allowed;
        each later one's from the previous message, between 1 hour and 30 days; days are
        calendar days that keep the local time across DST changes, hours are exact),
        **fatigue** rules keyed by a UUID field (rule 1, on by default: no new invite while
        the person holds a valid, unanswered token of this policy; rule 2: at most N
        invites in D days), **business rules** (open hours per weekday in an IANA time
        zone, default Monday to Friday, all day, UTC; closed dates and a public-holiday
        calendar close whole days) and optional **DND webhooks** per channel. The
        account needs a queue integration first. Answers 201 with `ETag` and `Location`.
        `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            409: "`queue-integration-required`: set the account's queue integration first; "
            "`policy-name-taken`: another live policy has this name."
        },
    ),
)
async def create_policy(
    account_id: str, body: PolicyCreate, actor: ConfigActor, session: SessionDep, response: Response
) -> PolicyOut:
    """Create a policy. The account needs a queue integration first (409 otherwise)."""
    async with session.begin():
        policy, _ = await service.create_policy(
            session, account_id, body, actor.context.url_policy, actor.now()
        )
        await _record(actor, session, "policy.create", policy, None)
        response.headers["Location"] = f"/v1/accounts/{account_id}/policies/{policy.id}"
        return await _out(session, policy, response)


@router.get(
    "/{policy_id}",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Get a policy",
    description="The policy with its lineup (each message's id, position, channel, delay and "
    "the checks before it goes out). The `ETag` header is the version for `If-Match`. "
    "Deleted policies are 404. Any key that can see the account.",
    responses=problems(401, 404, 422),
)
async def get_policy(
    account_id: str, policy_id: str, actor: ReadActor, session: SessionDep, response: Response
) -> PolicyOut:
    async with session.begin():
        return await _out(
            session, await service.get_policy(session, account_id, policy_id), response
        )


@router.patch(
    "/{policy_id}",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Edit a policy",
    description=doc(
        """
        Renames it, or edits fatigue, business rules or DND webhooks. Nested objects merge
        with what is stored, except `business_rules.days`, which replaces the whole week (a
        missing day is closed). Every edit takes effect at once for messages not yet sent:
        new business rules re-time deferred messages; a new fatigue `uuid_field` resets this
        policy's fatigue history. Conditional with `If-Match` or a `version` field (412 when
        stale). `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        412,
        *BODY,
        notes={409: "`policy-name-taken`: another live policy has this name."},
    ),
)
async def patch_policy(
    account_id: str,
    policy_id: str,
    body: PolicyPatch,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = IfMatch,
) -> PolicyOut:
    """Rename; edit fatigue, business rules or DND webhooks (merge). If-Match or a
    `version` field makes it conditional (412 when stale)."""
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id, lock=True)
        check_if_match(if_match, policy.version)
        check_version(body.version, policy.version)
        before = await _snapshot(session, policy)
        await service.patch_policy(
            session,
            policy,
            body.model_dump(exclude_unset=True, exclude={"version"}),
            actor.context.url_policy,
            actor.now(),
        )
        await _record(actor, session, "policy.update", policy, before)
        return await _out(session, policy, response)


@router.delete(
    "/{policy_id}",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Delete a policy",
    description=doc(
        """
        Deletes the policy; this cannot be undone (its name may be reused). Every dispatch
        using it pauses at once (`policy_deleted`) until it is moved to another policy;
        `paused_dispatches` lists them. The sandbox policy cannot be deleted. Conditional
        with `If-Match`. `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        412,
        422,
        notes={409: "`sandbox-not-deletable`: this is the account's sandbox policy."},
    ),
)
async def delete_policy(
    account_id: str,
    policy_id: str,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = IfMatch,
) -> PolicyOut:
    """Delete (cannot be undone). Its dispatches pause (`policy_deleted`) until moved."""
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id, lock=True)
        check_if_match(if_match, policy.version)
        before = await _snapshot(session, policy)
        paused = await service.delete_policy(session, policy, actor.now())
        await _record(
            actor,
            session,
            "policy.delete",
            policy,
            before,
            after={"deleted": True, "paused_dispatches": paused},
        )
        return await _out(session, policy, response, paused)


async def _set_status(
    account_id: str,
    policy_id: str,
    new_status: str,
    actor: Actor,
    session: SessionDep,
    response: Response,
    request: PauseRequest | None,
) -> PolicyOut:
    request = request or PauseRequest()
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id, lock=True)
        await check_incident_reference(session, request.incident)
        before: dict[str, object] = {"status": policy.status}
        version = policy.version
        await service.set_policy_status(session, policy, new_status, actor.now())
        after: dict[str, Any] = {"status": policy.status}
        if request.reason is not None:
            after["reason"] = request.reason
        action = f"policy.{'pause' if new_status == 'paused' else 'resume'}"
        if policy.version != version:
            await _record(
                actor, session, action, policy, before, after=after, incident=request.incident
            )
        else:  # pausing a paused policy changes nothing: audited, no new version
            actor.audit(
                session,
                action,
                "policy",
                policy.id,
                account_id=account_id,
                before=before,
                incident=request.incident,
                after=after,
            )
        return await _out(session, policy, response)


@router.post(
    "/{policy_id}/pause",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Pause a policy",
    description=doc(
        """
        No message of any dispatch using the policy goes out until it is resumed: messages
        that come due meanwhile are held (state `held`), not dropped. The optional body's
        `reason` and `incident` (an id from `/v1/incidents`) are kept in the audit log.
        Pausing a paused policy changes nothing. Any key that can see the account.
        """
    ),
    responses=problems(
        401, 404, *BODY, notes={422: "Also an `incident` that is not a known incident id."}
    ),
)
async def pause_policy(
    account_id: str,
    policy_id: str,
    actor: ControlActor,
    session: SessionDep,
    response: Response,
    body: PauseRequest | None = Body(default=None),
) -> PolicyOut:
    """No message of any dispatch using the policy goes out until it is resumed. The
    optional `reason` and `incident` reference are kept in the audit log."""
    return await _set_status(account_id, policy_id, "paused", actor, session, response, body)


@router.post(
    "/{policy_id}/resume",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Resume a policy",
    description=doc(
        """
        Lets the policy's messages go again: those that came due while it was paused go out
        now, subject to the rules at this time (business hours, fatigue, unsubscribes, DND).
        Optional `reason` and `incident` as for pause. Any key that can see the account.
        """
    ),
    responses=problems(
        401, 404, *BODY, notes={422: "Also an `incident` that is not a known incident id."}
    ),
)
async def resume_policy(
    account_id: str,
    policy_id: str,
    actor: ControlActor,
    session: SessionDep,
    response: Response,
    body: PauseRequest | None = Body(default=None),
) -> PolicyOut:
    return await _set_status(account_id, policy_id, "active", actor, session, response, body)


@router.post(
    "/{policy_id}/copy-to-sandbox",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Copy a policy's settings to the sandbox",
    description=doc(
        """
        Copies the lineup (with new message ids), fatigue, business rules and DND webhooks
        of this policy onto the account's sandbox policy and returns the sandbox. Sandbox
        messages skip ahead of any backlog, are flagged `sandbox: true` on the queue, and
        keep a fatigue history of their own. The sandbox's active dispatches pause
        (`lineup_changed`) until they have templates for the new messages. `backend` and
        `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        422,
        notes={409: "`already-sandbox`: this policy is the sandbox."},
    ),
)
async def copy_to_sandbox(
    account_id: str, policy_id: str, actor: ConfigActor, session: SessionDep, response: Response
) -> PolicyOut:
    """Copy lineup, fatigue, business and DND settings onto the sandbox; returns the sandbox."""
    async with session.begin():
        source = await service.get_policy(session, account_id, policy_id, lock=True)
        sandbox, paused = await service.copy_to_sandbox(session, source, actor.now())
        await _record(actor, session, "policy.copy_to_sandbox", sandbox, {"source": source.id})
        return await _out(session, sandbox, response, paused)


@router.post(
    "/{policy_id}/lineup",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Add a lineup message",
    description=doc(
        """
        Inserts a message (`channel`, `delay`) at `position` (1-based; default: at the end)
        and returns the policy, with `Location` naming the new message. Every active
        dispatch of the policy pauses (`lineup_changed`) until it has a message template
        for the new message; `paused_dispatches` lists them. Conditional with `If-Match`.
        `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, 412, *BODY),
)
async def insert_lineup_message(
    account_id: str,
    policy_id: str,
    body: LineupInsert,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = IfMatch,
) -> PolicyOut:
    """Insert a message (default: at the end). Every dispatch of the policy is paused
    (`lineup_changed`) until it has a template for it; `paused_dispatches` lists them."""
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id, lock=True)
        check_if_match(if_match, policy.version)
        before = await _snapshot(session, policy)
        message, paused = await service.insert_lineup_message(
            session, policy, body.channel, parse_delay(body.delay), body.position, actor.now()
        )
        await _record(actor, session, "policy.lineup.insert", policy, before)
        response.headers["Location"] = (
            f"/v1/accounts/{account_id}/policies/{policy_id}/lineup/{message.id}"
        )
        return await _out(session, policy, response, paused)


@router.patch(
    "/{policy_id}/lineup/{message_id}",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Edit a lineup message",
    description=doc(
        """
        Changes a message's channel or delay. It takes effect at once for messages not yet
        sent: pending ones are re-timed. A dispatch whose token validity would no longer
        outlast the lineup pauses (`validity_too_short`, listed in `paused_dispatches`)
        rather than the edit being refused. Conditional with `If-Match` or a `version`
        field (412 when stale). `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, 412, *BODY),
)
async def edit_lineup_message(
    account_id: str,
    policy_id: str,
    message_id: str,
    body: LineupPatch,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = IfMatch,
) -> PolicyOut:
    """Edit channel or delay; takes effect at once for messages not yet sent. If-Match or
    a `version` field makes it conditional."""
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id, lock=True)
        message = await service.get_lineup_message(session, policy, message_id)
        check_if_match(if_match, policy.version)
        check_version(body.version, policy.version)
        before = await _snapshot(session, policy)
        delay = parse_delay(body.delay) if body.delay is not None else None
        paused = await service.edit_lineup_message(
            session, policy, message, body.channel, delay, actor.now()
        )
        await _record(actor, session, "policy.lineup.update", policy, before)
        return await _out(session, policy, response, paused)


@router.delete(
    "/{policy_id}/lineup/{message_id}",
    response_model=PolicyOut,
    response_model_exclude_none=True,
    summary="Delete a lineup message",
    description=doc(
        """
        Deletes a step; this cannot be undone. From now on every invite skips it (reason
        `step_deleted`) and moves on to the next message; later messages move up one
        position. Refused (422) when the remaining delays would break the lineup's rules.
        Conditional with `If-Match`. `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, 412, 422),
)
async def delete_lineup_message(
    account_id: str,
    policy_id: str,
    message_id: str,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = IfMatch,
) -> PolicyOut:
    """Delete a step (cannot be undone): invites skip it and move on. If-Match makes it
    conditional."""
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id, lock=True)
        message = await service.get_lineup_message(session, policy, message_id)
        check_if_match(if_match, policy.version)
        before = await _snapshot(session, policy)
        await service.delete_lineup_message(session, policy, message, actor.now())
        await _record(actor, session, "policy.lineup.delete", policy, before)
        return await _out(session, policy, response, [])


@router.get(
    "/{policy_id}/versions",
    response_model=list[PolicyVersionSummary],
    summary="List a policy's versions",
    description=doc(
        """
        Every change of the policy made a new, immutable version (its settings, lineup
        included, as they were right after the change); this lists them **newest first**,
        a page at a time: each one's `number` (the policy's `version`, its ETag, after the
        change), `created_at`, the `key_id` that made it and the `change` (the audit
        action: `policy.create`, `policy.update`, `policy.lineup.insert` …; `migrated` for
        the state a policy had when versions began). `GET …/versions/{number}` shows one.
        Deleted policies are 404. Any key that can see the account.
        """
    ),
    responses=problems(401, 404, 422),
)
async def list_policy_versions(
    account_id: str, policy_id: str, actor: ReadActor, session: SessionDep, pager: PagerDep
) -> list[PolicyVersionSummary]:
    """The policy's versions, newest first."""
    async with session.begin():
        versions, next_cursor = await service.list_versions(
            session, account_id, policy_id, pager.page
        )
    pager.next_page(next_cursor)
    return [service.version_summary(v) for v in versions]


@router.get(
    "/{policy_id}/versions/{number}",
    response_model=PolicyVersionOut,
    summary="Get a policy version",
    description=doc(
        """
        One version of the policy: its `snapshot` (name, status, fatigue, business rules,
        DND webhooks with the values of their query masked, the lineup with ids,
        positions, channels and delays) and its `diff` against version `number - 1`: a
        list of `{path, before, after}`, paths as JSON Pointers into the snapshot
        (`/business_rules/days/mon`, `/lineup/1/delay`, list items by 0-based index).
        `diff` is null when there is no previous version. 404 for a number the policy
        never had. Any key that can see the account.
        """
    ),
    responses=problems(401, 404, 422),
)
async def get_policy_version(
    account_id: str,
    policy_id: str,
    actor: ReadActor,
    session: SessionDep,
    number: int = Path(ge=1, le=2**31 - 1, description="The version's number."),
) -> PolicyVersionOut:
    async with session.begin():
        return await service.get_version(session, account_id, policy_id, number)
