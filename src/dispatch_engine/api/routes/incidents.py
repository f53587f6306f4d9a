"""`/v1/incidents` (operators and admins only) and the public `/v1/status-feed`.

Each route owns its transaction; every change is audited with before/after and the
incident reference, and queues the incident notifications in the same transaction.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from dispatch_engine.api.deps import Actor, ContextDep, OperatorActor, SessionDep
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


@router.post(BASE, status_code=status.HTTP_201_CREATED, response_model=IncidentOut)
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


@router.get(BASE, response_model=IncidentPage)
async def list_incidents(
    actor: OperatorActor,
    session: SessionDep,
    state: State | None = None,
    severity: Severity | None = None,
    account: str | None = Query(default=None, description="Incidents impacting this account"),
    open: bool | None = Query(default=None, description="true: not closed; false: closed"),
    overdue: bool | None = Query(default=None, description="Any (or `clock`'s) clock overdue"),
    clock: Literal["ack", "update", "postmortem"] | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> IncidentPage:
    """Newest first."""
    filters = service.IncidentFilters(state, severity, account, open, overdue, clock)
    async with session.begin():
        items, next_cursor = await service.list_incidents(
            session, filters, actor.now(), limit=limit, cursor=cursor
        )
    return IncidentPage(items=items, next_cursor=next_cursor)


@router.get(ITEM, response_model=IncidentOut)
async def get_incident(
    incident_id: str, actor: OperatorActor, session: SessionDep, response: Response
) -> IncidentOut:
    async with session.begin():
        incident = await service.get_incident(session, incident_id)
        out = await service.incident_out(session, incident, actor.now())
    response.headers["ETag"] = etag(out.version)
    return out


@router.patch(ITEM, response_model=IncidentOut)
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


@router.post(ITEM + "/acknowledge", response_model=IncidentOut)
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


@router.post(ITEM + "/transitions", response_model=IncidentOut)
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
    ITEM + "/status-updates", status_code=status.HTTP_201_CREATED, response_model=StatusUpdateOut
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


@router.get(ITEM + "/status-updates", response_model=list[StatusUpdateOut])
async def list_status_updates(
    incident_id: str, actor: OperatorActor, session: SessionDep
) -> list[StatusUpdateOut]:
    async with session.begin():
        await service.get_incident(session, incident_id)
        return [notices.notice_out(n) for n in await notices.list_notices(session, incident_id)]


@router.get("/v1/status-feed", response_model=StatusFeed)
async def status_feed(context: ContextDep, response: Response) -> StatusFeed:
    """Public (no API key): the live notices only — each incident's newest, unless expired
    (a Resolved notice lives one hour). Shows the notices' own words only: no incident
    titles, and no account names unless a notice names them."""
    now = context.clock.now()
    async with context.sessions() as session, session.begin():
        items = await notices.live_feed(session, now)
    response.headers["Cache-Control"] = "public, max-age=30"
    return StatusFeed(generated_at=now, notices=items)


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return prefers_csv(request.headers.get("accept", ""))


def prefers_csv(accept: str) -> bool:
    """Content negotiation between JSON (the default) and CSV: CSV when the Accept header
    rates `text/csv` above every JSON type it lists (q-values, RFC 9110 §12.5.1), or as high
    and listed first."""
    ranked: dict[str, tuple[float, int]] = {}  # media type → (quality, -position)
    for position, item in enumerate(accept.lower().split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranked[media] = max(ranked.get(media, (0.0, 0)), (quality, -position))
    csv = ranked.get("text/csv", (0.0, 0))
    json = max(ranked.get("application/json", (0.0, 0)), ranked.get("application/*", (0.0, 0)))
    return csv[0] > 0 and csv > json


@router.get(
    ITEM + "/impacted-sendings",
    response_model=ImpactedPage,
    responses={200: {"content": {"text/csv": {}}}},
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
        if not _wants_csv(request, format):
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


@router.get(ITEM + "/approvals", response_model=list[resends.ApprovalOut])
async def list_approvals(
    incident_id: str, actor: OperatorActor, session: SessionDep
) -> list[resends.ApprovalOut]:
    async with session.begin():
        await service.get_incident(session, incident_id)
        return await resends.list_approvals(session, incident_id)


@router.post(
    ITEM + "/resends",
    response_model=resends.ResendOut,
    responses={409: {"description": "Nothing was re-sent: every sending was refused."}},
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


@router.get(ITEM + "/resends", response_model=list[resends.ResendRecord])
async def list_resends(
    incident_id: str, actor: OperatorActor, session: SessionDep
) -> list[resends.ResendRecord]:
    async with session.begin():
        await service.get_incident(session, incident_id)
        return await resends.list_resends(session, incident_id)


@router.post(
    ITEM + "/communications",
    status_code=status.HTTP_201_CREATED,
    response_model=CommunicationOut,
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


@router.get(ITEM + "/communications", response_model=list[CommunicationOut])
async def list_communications(
    incident_id: str, actor: OperatorActor, session: SessionDep, account: str | None = None
) -> list[CommunicationOut]:
    async with session.begin():
        await service.get_incident(session, incident_id)
        return await communications.list_communications(
            session, incident_id, account, actor.context.cipher
        )


@router.put(ITEM + "/postmortem", response_model=PostmortemOut)
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


@router.get(ITEM + "/postmortem", response_model=PostmortemOut)
async def get_postmortem(
    incident_id: str, actor: OperatorActor, session: SessionDep
) -> PostmortemOut:
    async with session.begin():
        incident = await service.get_incident(session, incident_id)
        return postmortem.postmortem_out(
            await postmortem.get_postmortem(session, incident.id), incident
        )
