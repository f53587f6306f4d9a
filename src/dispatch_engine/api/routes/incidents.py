"""`/v1/incidents` (operators and admins only) and the public `/v1/status-feed`.

Each route owns its transaction; every change is audited with before/after and the
incident reference, and queues the incident notifications in the same transaction.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from dispatch_engine.api.content_type import wants_csv
from dispatch_engine.api.deps import Actor, ContextDep, OperatorActor, SessionDep
from dispatch_engine.api.openapi import BODY, ResendRefusedProblem, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.incidents import communications, notices, postmortem, resends, service
from dispatch_engine.incidents.impacted import (
    ImpactedPage,
    ImpactedQuery,
    impacted_page,
    stream_csv,
    time_range,
)
from dispatch_engine.incidents.notifications import enqueue
from dispatch_engine.models import Incident
from dispatch_engine.rules.incident_states import State
from dispatch_engine.schemas.incidents import (
    AcknowledgeIn,
    CommunicationIn,
    CommunicationOut,
    IncidentCreate,
    IncidentFields,
    IncidentOut,
    IncidentPage,
    PostmortemIn,
    PostmortemOut,
    Severity,
    StatusFeed,
    StatusUpdateIn,
    StatusUpdateOut,
    TransitionIn,
)
from dispatch_engine.services.etags import check_if_match, etag

router = APIRouter(tags=["incidents"])
BASE = "/v1/incidents"
ITEM = BASE + "/{incident_id}"


def _label(incident: Incident) -> str:
    return f"Incident {incident.id} [{incident.severity or 'unrated'}] {incident.title}"


async def _snapshot(session: AsyncSession, incident: Incident, actor: Actor) -> dict[str, Any]:
    out = await service.incident_out(session, incident, actor.now())
    return out.model_dump(mode="json", exclude={"clocks", "overdue"})


@router.post(
    BASE,
    status_code=status.HTTP_201_CREATED,
    response_model=IncidentOut,
    summary="Report an incident",
    description=doc(
        """
        Opens an incident in state `reported` with its title and the service impacted, and
        optionally the other fields (description, impact, severity, start time, symptoms,
        evidence links, impacted accounts, commander, communicator, customer tickets…).
        The 15-minute acknowledgement clock starts; the notification webhooks get
        `incident.created`. Answers 201 with `ETag` and `Location`. `operator` and `admin`
        keys. Audited.
        """
    ),
    responses=problems(401, 403, *BODY),
)
async def create_incident(
    body: IncidentCreate, actor: OperatorActor, session: SessionDep, response: Response
) -> IncidentOut:
    """Report an incident (state `reported`); the 15-minute acknowledgement clock starts."""
    async with session.begin():
        incident = await service.create_incident(session, body, actor.now(), actor.principal.key_id)
        out = await service.incident_out(session, incident, actor.now())
        actor.audit(
            session,
            "incident.create",
            "incident",
            incident.id,
            incident=incident.id,
            after=out.model_dump(mode="json", exclude={"clocks", "overdue"}),
        )
        await enqueue(
            session,
            "incident.created",
            incident,
            f"New incident: {_label(incident)} — {incident.service} (reported)",
            actor.now(),
        )
    response.headers["ETag"] = etag(out.version)
    response.headers["Location"] = f"{BASE}/{out.id}"
    return out


@router.get(
    BASE,
    response_model=IncidentPage,
    summary="List incidents",
    description=doc(
        """
        Incidents, newest first, each with its clocks (due times, whether overdue). Filters
        combine: `state`, `severity`, `account` (incidents impacting it), `open` (true: not
        closed), `overdue` (any clock, or the one named by `clock`). Paged: pass
        `next_cursor` back as `cursor`. `operator` and `admin` keys.
        """
    ),
    responses=problems(401, 403, 422),
)
async def list_incidents(
    actor: OperatorActor,
    session: SessionDep,
    state: State | None = None,
    severity: Severity | None = None,
    account: str | None = Query(default=None, description="Incidents impacting this account"),
    open: bool | None = Query(default=None, description="true: not closed; false: closed"),
    overdue: bool | None = Query(default=None, description="Any (or `clock`'s) clock overdue"),
    clock: Literal["ack", "update", "postmortem"] | None = None,
    *,
    pager: PagerDep,
) -> IncidentPage:
    """Newest first."""
    filters = service.IncidentFilters(state, severity, account, open, overdue, clock)
    page = pager.page
    async with session.begin():
        items, next_cursor = await service.list_incidents(
            session, filters, actor.now(), limit=page.limit, cursor=page.cursor
        )
    pager.next_page(next_cursor)
    return IncidentPage(items=items, next_cursor=next_cursor)


@router.get(
    ITEM,
    response_model=IncidentOut,
    summary="Get an incident",
    description="The incident with its fields, state and the time it entered each state, "
    "its clocks (`ack` 15 minutes, `update` every 30 minutes, `postmortem` for P1/P2) and "
    "whether one is overdue. The `ETag` header is the version for `If-Match`. `operator` "
    "and `admin` keys.",
    responses=problems(401, 403, 404, 422),
)
async def get_incident(
    incident_id: str, actor: OperatorActor, session: SessionDep, response: Response
) -> IncidentOut:
    async with session.begin():
        incident = await service.get_incident(session, incident_id)
        out = await service.incident_out(session, incident, actor.now())
    response.headers["ETag"] = etag(out.version)
    return out


@router.patch(
    ITEM,
    response_model=IncidentOut,
    summary="Edit an incident",
    description=doc(
        """
        Changes the fields sent (the state changes through transitions). The severity is
        agreed at acknowledgement; afterwards it may be changed here but not cleared.
        Conditional with `If-Match` (412 when stale). `operator` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        412,
        *BODY,
        notes={409: "`incident-closed`: a closed incident cannot change."},
    ),
)
async def patch_incident(
    incident_id: str,
    body: IncidentFields,
    actor: OperatorActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = Header(default=None),
) -> IncidentOut:
    """Edit fields (severity too: agreed at acknowledgement, changeable later). If-Match is
    checked when sent."""
    async with session.begin():
        incident = await service.get_incident(session, incident_id, lock=True)
        check_if_match(if_match, incident.version)
        before = await _snapshot(session, incident, actor)
        await service.patch_incident(session, incident, body, actor.now())
        out = await service.incident_out(session, incident, actor.now())
        actor.audit(
            session,
            "incident.update",
            "incident",
            incident.id,
            incident=incident.id,
            before=before,
            after=out.model_dump(mode="json", exclude={"clocks", "overdue"}),
        )
    response.headers["ETag"] = etag(out.version)
    return out


@router.post(
    ITEM + "/acknowledge",
    response_model=IncidentOut,
    summary="Acknowledge an incident",
    description=doc(
        """
        `reported` → `acknowledged`: stops the 15-minute acknowledgement clock and starts
        the 30-minute status-update clock. The severity (P1–P4; P1 and P2 are major) is
        agreed here: required unless the incident already has one. The same as a
        transition to `acknowledged`. `operator` and `admin` keys. Audited; the
        notification webhooks get `incident.state_changed`.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            409: "`illegal-transition`: the incident is not `reported` (`current_state`, "
            "`allowed`)."
        },
    ),
)
async def acknowledge_incident(
    incident_id: str,
    actor: OperatorActor,
    session: SessionDep,
    body: AcknowledgeIn | None = Body(default=None),
) -> IncidentOut:
    """reported → acknowledged (stops the 15-minute acknowledgement clock). The severity is
    agreed here: required unless the incident already has one. The same as `POST
    …/transitions {"to": "acknowledged"}`."""
    request = body or AcknowledgeIn()
    move = TransitionIn(to="acknowledged", severity=request.severity, note=request.note)
    return await _transition(incident_id, move, actor, session)


@router.post(
    ITEM + "/transitions",
    response_model=IncidentOut,
    summary="Change an incident's state",
    description=doc(
        """
        Moves the incident one step along reported → acknowledged → investigating →
        identified → resolved → closed (identified → investigating is the one way back),
        stamping the time it entered the state. Acknowledging needs a severity unless the
        incident has one; resolving starts the post-mortem clock of a P1/P2. `operator`
        and `admin` keys. Audited; the notification webhooks get `incident.state_changed`.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            409: "`illegal-transition`: not a move the graph allows (`current_state`, "
            "`allowed`); `postmortem-required`: a P1/P2 closes only once its post-mortem "
            "is recorded."
        },
    ),
)
async def transition_incident(
    incident_id: str, body: TransitionIn, actor: OperatorActor, session: SessionDep
) -> IncidentOut:
    """Move along reported → acknowledged → investigating → identified → resolved → closed.
    Illegal jumps are refused (409 `illegal-transition`); a P1/P2 closes only with its
    post-mortem (409 `postmortem-required`)."""
    return await _transition(incident_id, body, actor, session)


async def _transition(
    incident_id: str, body: TransitionIn, actor: Actor, session: AsyncSession
) -> IncidentOut:
    async with session.begin():
        incident = await service.get_incident(session, incident_id, lock=True)
        before = await _snapshot(session, incident, actor)
        previous = await service.transition(session, incident, body, actor.now())
        out = await service.incident_out(session, incident, actor.now())
        actor.audit(
            session,
            f"incident.{body.to}",
            "incident",
            incident.id,
            incident=incident.id,
            before=before,
            after={**out.model_dump(mode="json", exclude={"clocks", "overdue"}), "note": body.note},
        )
        await enqueue(
            session,
            "incident.state_changed",
            incident,
            f"{_label(incident)}: {previous} → {incident.state}",
            actor.now(),
            previous_state=previous,
            note=body.note,
        )
    return out


@router.post(
    ITEM + "/status-updates",
    status_code=status.HTTP_201_CREATED,
    response_model=StatusUpdateOut,
    summary="Post a status notice",
    description=doc(
        """
        Posts a public notice from a template: `investigating` (symptoms; ETA unknown),
        `identified` (symptoms and an ETA: fix in progress) or `resolved` (only once the
        incident is resolved; the notice then expires an hour after posting). Optional
        `message` text, and `accounts` whose names the notice shows (none unless listed).
        It counts as the 30-minute status update and appears in the public status feed.
        `operator` and `admin` keys. Audited; the notification webhooks get
        `incident.status_update`.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            409: "`incident-closed`; `incident-not-resolved`: a `resolved` notice before "
            "the incident is; `incident-resolved`: a resolved incident takes only a "
            "`resolved` notice."
        },
    ),
)
async def post_status_update(
    incident_id: str, body: StatusUpdateIn, actor: OperatorActor, session: SessionDep
) -> StatusUpdateOut:
    """Post a notice from a template; it counts as the 30-minute status update."""
    async with session.begin():
        incident = await service.get_incident(session, incident_id, lock=True)
        notice = await notices.post_notice(
            session, incident, body, actor.now(), actor.principal.key_id
        )
        incident.last_update_at = actor.now()
        await service.touch(session, incident, actor.now())
        out = notices.notice_out(notice)
        actor.audit(
            session,
            "incident.status_update",
            "incident",
            incident.id,
            incident=incident.id,
            after=out.model_dump(mode="json"),
        )
        await enqueue(
            session,
            "incident.status_update",
            incident,
            f"{_label(incident)}: {notice.text}",
            actor.now(),
            status_update=out.model_dump(mode="json"),
        )
    return out


@router.get(
    ITEM + "/status-updates",
    response_model=list[StatusUpdateOut],
    summary="List an incident's status notices",
    description="Every notice posted for the incident, with its text and when it expires. "
    "`operator` and `admin` keys.",
    responses=problems(401, 403, 404, 422),
)
async def list_status_updates(
    incident_id: str, actor: OperatorActor, session: SessionDep, pager: PagerDep
) -> list[StatusUpdateOut]:
    """The incident's status updates, oldest first."""
    async with session.begin():
        await service.get_incident(session, incident_id)
        posted, next_cursor = await notices.list_notices(session, incident_id, pager.page)
    pager.next_page(next_cursor)
    return [notices.notice_out(n) for n in posted]


@router.get(
    "/v1/status-feed",
    response_model=StatusFeed,
    summary="Public status feed",
    description=doc(
        """
        For a status page, **no key needed**: the live notices only, the newest of each
        incident (a `resolved` notice lives one hour). It shows the notices' own words only:
        no incident titles, and no account names unless a notice names them. Cacheable for
        30 seconds.
        """
    ),
)
async def status_feed(context: ContextDep, response: Response) -> StatusFeed:
    """Public (no API key): the live notices only — each incident's newest, unless expired
    (a Resolved notice lives one hour). Shows the notices' own words only: no incident
    titles, and no account names unless a notice names them."""
    now = context.clock.now()
    async with context.sessions() as session, session.begin():
        items = await notices.live_feed(session, now)
    response.headers["Cache-Control"] = "public, max-age=30"
    return StatusFeed(generated_at=now, notices=items)


@router.get(
    ITEM + "/impacted-sendings",
    response_model=ImpactedPage,
    summary="List the sendings an incident impacted",
    description=doc(
        """
        The `failed` and `delayed` sendings scheduled from the incident's start to its
        resolution (or now), grouped by account, with each sending's id, dispatch, channel,
        state, reason and scheduled time, and its resend if any; filter by `account` and
        `channel`. JSON in pages (`limit`, then `cursor` = `next_cursor`), or the whole
        list as streamed CSV with `Accept: text/csv` or `format=csv`. These are the ids to
        approve and resend. `operator` and `admin` keys.
        """
    ),
    responses={
        200: {
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "account,account_name,sending,dispatch,channel,state,reason,"
                    "scheduled_at,invite,resend_of,resent_as\r\n",
                }
            }
        },
        **problems(401, 403, 404, 422),
    },
)
async def impacted_sendings(
    incident_id: str,
    request: Request,
    actor: OperatorActor,
    session: SessionDep,
    account: str | None = None,
    channel: Literal["email", "sms"] | None = None,
    format: Literal["json", "csv"] | None = Query(
        default=None, description="Overrides the Accept header (text/csv → CSV)."
    ),
    limit: int = Query(default=500, ge=1, le=5000, description="JSON page size"),
    cursor: str | None = None,
) -> Any:
    """Failed and delayed sendings scheduled from the incident's start to its resolution
    (or now), grouped by account: JSON pages, or the whole list as streamed CSV."""
    async with session.begin():
        incident = await service.get_incident(session, incident_id)
        start, end = time_range(incident, actor.now())
        query = ImpactedQuery(incident.id, start, end, account, channel)
        if not wants_csv(request, format):
            return await impacted_page(session, query, limit=limit, cursor=cursor)
    return StreamingResponse(
        stream_csv(actor.context.sessions, query),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{incident.id}-impacted-sendings.csv"'
        },
    )


@router.post(
    ITEM + "/approvals",
    status_code=status.HTTP_201_CREATED,
    response_model=resends.ApprovalOut,
    summary="Record a resend approval",
    description=doc(
        """
        Records that an account's owner or admin (as recorded on the account, matched by
        email; the `role` is derived) approved resending its impacted sendings: who, by
        which channel, when (not in the future), an optional note, and the `sendings`
        covered (each an impacted sending of that account in this incident), or, without
        them, all of the account's impacted sendings at this moment. Needed to resend a
        sending more than 60 minutes (the configured threshold) past its scheduled time.
        `operator` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, *BODY),
)
async def record_approval(
    incident_id: str, body: resends.ApprovalIn, actor: OperatorActor, session: SessionDep
) -> resends.ApprovalOut:
    """Record an account owner's or admin's approval to resend sendings past the threshold."""
    async with session.begin():
        incident = await service.get_incident(session, incident_id, lock=True)
        start, end = time_range(incident, actor.now())
        approval, covered = await resends.record_approval(
            session,
            incident.id,
            body,
            ImpactedQuery(incident.id, start, end, body.account),
            actor.now(),
            actor.principal.key_id,
        )
        out = resends.approval_out(approval, covered)
        actor.audit(
            session,
            "incident.approval",
            "approval",
            approval.id,
            account_id=approval.account_id,
            incident=incident.id,
            after=out.model_dump(mode="json"),
        )
    return out


@router.get(
    ITEM + "/approvals",
    response_model=list[resends.ApprovalOut],
    summary="List resend approvals",
    description="The approvals recorded for the incident, with the sendings each covers. "
    "`operator` and `admin` keys.",
    responses=problems(401, 403, 404, 422),
)
async def list_approvals(
    incident_id: str, actor: OperatorActor, session: SessionDep, pager: PagerDep
) -> list[resends.ApprovalOut]:
    """The incident's resend approvals, oldest first, each with the sendings it covers."""
    async with session.begin():
        await service.get_incident(session, incident_id)
        approvals, next_cursor = await resends.list_approvals(session, incident_id, pager.page)
    pager.next_page(next_cursor)
    return approvals


@router.post(
    ITEM + "/resends",
    response_model=resends.ResendOut,
    summary="Resend impacted sendings",
    description=doc(
        """
        Re-sends failed or delayed sendings of the incident under the window rule: a
        sending whose scheduled time is at most 60 minutes ago (the configured threshold)
        may be re-sent by an operator; an older one only under an approval that covers it.
        A resend is a new message that goes through every check again (pauses, responded,
        expiry, unsubscribes, business hours, DND); a delayed original is withdrawn.
        `dry_run` answers what would happen and writes nothing. Each sending gets an
        `outcome`: `resent` / `allowed`, `needs_approval`, `not_resendable` or
        `already_resent`. **Safe to retry**: a sending is re-sent at most once per approval
        (or once within the threshold); a retry answers `already_resent` with the same new
        id. A real run that refuses every sending sends nothing and answers 409.
        `operator` and `admin` keys. Audited, refusals included.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        *BODY,
        notes={
            409: "`resend-refused`: every sending was refused; `errors` gives each one's "
            "reason and the body carries the usual `results` and `counts`."
        },
        models={409: ResendRefusedProblem},
    ),
)
async def resend_sendings(
    incident_id: str, body: resends.ResendIn, actor: OperatorActor, session: SessionDep
) -> resends.ResendOut:
    """Resend failed/delayed sendings under the window rule; `dry_run` writes nothing.
    Safe to retry: a sending already re-sent under the same approval (or within the
    threshold) answers `already_resent` with the same new id. A run in which every sending
    is refused (`needs_approval`, `not_resendable`) answers 409 `resend-refused` with each
    sending's reason and the same `results`; the refusal is audited."""
    threshold = actor.context.settings.resend_threshold_minutes
    async with session.begin():
        incident = await service.get_incident(session, incident_id, lock=not body.dry_run)
        start, end = time_range(incident, actor.now())
        out = await resends.resend(
            session,
            incident.id,
            body,
            ImpactedQuery(incident.id, start, end),
            actor.now(),
            threshold,
            actor.principal.key_id,
        )
        if not body.dry_run:
            _audit_resends(session, actor, incident.id, out)
    refused = resends.refusal_of(out)
    if refused is not None:  # raised after the commit: the refusal's audit record stays
        raise refused
    return out


def _audit_resends(
    session: AsyncSession, actor: Actor, incident_id: str, out: resends.ResendOut
) -> None:
    refused = []
    for item in out.results:
        if item.outcome == "resent" and item.resend:
            actor.audit(
                session,
                "incident.resend",
                "message",
                item.resend,
                account_id=item.account,
                incident=incident_id,
                after=item.model_dump(mode="json"),
            )
        elif item.outcome in resends.REFUSALS:
            refused.append(item.model_dump(mode="json"))
    if refused:
        actor.audit(
            session,
            "incident.resend_refused",
            "incident",
            incident_id,
            incident=incident_id,
            after={"refused": refused},
        )


@router.get(
    ITEM + "/resends",
    response_model=list[resends.ResendRecord],
    summary="List resends",
    description="The resends made under the incident: original and new message ids, the "
    "approval used (null within the threshold) and how late the sending was. `operator` "
    "and `admin` keys.",
    responses=problems(401, 403, 404, 422),
)
async def list_resends(
    incident_id: str, actor: OperatorActor, session: SessionDep, pager: PagerDep
) -> list[resends.ResendRecord]:
    """The incident's resends, oldest first."""
    async with session.begin():
        await service.get_incident(session, incident_id)
        records, next_cursor = await resends.list_resends(session, incident_id, pager.page)
    pager.next_page(next_cursor)
    return records


@router.post(
    ITEM + "/communications",
    status_code=status.HTTP_201_CREATED,
    response_model=CommunicationOut,
    summary="Log a customer communication",
    description=doc(
        """
        Records that an account was told about the incident: by `direct_email`, `in_app`
        notification or `phone`, to whom, what, by whom (default: the API key) and when
        (default: now; never in the future). The recipient is stored encrypted; the audit
        log keeps only a keyed hash of it. `operator` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, 404, *BODY),
)
async def record_communication(
    incident_id: str, body: CommunicationIn, actor: OperatorActor, session: SessionDep
) -> CommunicationOut:
    async with session.begin():
        incident = await service.get_incident(session, incident_id)
        entry = await communications.record_communication(
            session, incident.id, body, actor.now(), actor.principal.key_id, actor.context.cipher
        )
        out = communications.communication_out(entry, actor.context.cipher)
        actor.audit(
            session,
            "incident.communication",
            "communication",
            entry.id,
            account_id=entry.account_id,
            incident=incident.id,
            after=communications.audit_view(out, actor.context.hasher),  # no recipient
        )
    return out


@router.get(
    ITEM + "/communications",
    response_model=list[CommunicationOut],
    summary="List customer communications",
    description="The incident's communication log by account and time; `account` limits "
    "it to one account. `operator` and `admin` keys.",
    responses=problems(401, 403, 404, 422),
)
async def list_communications(
    incident_id: str,
    actor: OperatorActor,
    session: SessionDep,
    pager: PagerDep,
    account: str | None = None,
) -> list[CommunicationOut]:
    """The incident's communication log (one account's, when given), by account and time."""
    async with session.begin():
        await service.get_incident(session, incident_id)
        entries, next_cursor = await communications.list_communications(
            session, incident_id, account, actor.context.cipher, pager.page
        )
    pager.next_page(next_cursor)
    return entries


@router.put(
    ITEM + "/postmortem",
    response_model=PostmortemOut,
    summary="Record the post-mortem",
    description=doc(
        """
        Records (201) or revises (200) the post-mortem of a resolved incident: findings,
        improvement actions, an optional link to the full write-up, and the service credits
        due per account. The answer adds the time to resolution (start to resolved). It
        stops the post-mortem clock; a P1/P2 incident cannot close without one. `operator`
        and `admin` keys. Audited.
        """
    ),
    responses={
        201: {"model": PostmortemOut, "description": "Recorded for the first time."},
        **problems(
            401,
            403,
            404,
            409,
            *BODY,
            notes={409: "`incident-not-resolved`: only a resolved incident takes one."},
        ),
    },
)
async def put_postmortem(
    incident_id: str,
    body: PostmortemIn,
    actor: OperatorActor,
    session: SessionDep,
    response: Response,
) -> PostmortemOut:
    """Record (or revise) the post-mortem of a resolved incident; stops its clock."""
    async with session.begin():
        incident = await service.get_incident(session, incident_id, lock=True)
        existing = await service.has_postmortem(session, incident.id)
        before = (
            postmortem.postmortem_out(
                await postmortem.get_postmortem(session, incident.id), incident
            ).model_dump(mode="json")
            if existing
            else None
        )
        pm, created = await postmortem.record_postmortem(
            session, incident, body, actor.now(), actor.principal.key_id
        )
        await service.touch(session, incident, actor.now())
        out = postmortem.postmortem_out(pm, incident)
        actor.audit(
            session,
            "incident.postmortem",
            "incident",
            incident.id,
            incident=incident.id,
            before=before,
            after=out.model_dump(mode="json"),
        )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return out


@router.get(
    ITEM + "/postmortem",
    response_model=PostmortemOut,
    summary="Get the post-mortem",
    description="The incident's post-mortem with its time to resolution; 404 until one is "
    "recorded. `operator` and `admin` keys.",
    responses=problems(401, 403, 404, 422),
)
async def get_postmortem(
    incident_id: str, actor: OperatorActor, session: SessionDep
) -> PostmortemOut:
    async with session.begin():
        incident = await service.get_incident(session, incident_id)
        return postmortem.postmortem_out(
            await postmortem.get_postmortem(session, incident.id), incident
        )
