"""Status notices (R-INC-3): three templates, the 30-minute update clock, the public feed.

A notice is public: the feed shows only the notice's own fields (service, symptoms, ETA,
text, and the accounts the notice itself names), never the incident's title, description
or impacted accounts. An incident's newest notice is live until it expires (Resolved: one
hour after posting) or is superseded; a closed incident shows only a still-live Resolved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Conflict, ValidationFailed
from dispatch_engine.models import Incident, IncidentStatusUpdate, new_id
from dispatch_engine.schemas.incidents import FeedNotice, StatusUpdateIn, StatusUpdateOut
from dispatch_engine.store.accounts import account_names
from dispatch_engine.store.notices import live_notices, notices_of_incident
from dispatch_engine.store.paging import PageRequest

RESOLVED_LIVES = timedelta(hours=1)
TITLES = {
    "investigating": "Investigating",
    "identified": "Identified – fix in progress",
    "resolved": "Resolved",
}


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _sentence(text: str | None) -> str:
    text = (text or "").strip()
    return text if not text or text[-1] in ".!?" else text + "."


def render(
    template: str,
    service: str,
    symptoms: str | None,
    eta: datetime | None,
    message: str | None,
    account_names: list[str],
) -> str:
    """The notice text from its template (pure)."""
    if template == "investigating":
        body = (
            f"We are investigating an issue with {service}. "
            f"Symptoms: {_sentence(symptoms)} ETA: unknown."
        )
    elif template == "identified":
        assert eta is not None
        body = (
            f"We have identified the cause of the issue with {service} and a fix is in "
            f"progress. Symptoms: {_sentence(symptoms)} ETA: {_when(eta)}."
        )
    else:
        body = f"The issue with {service} has been resolved; the service is operating normally."
    parts = [f"{TITLES[template]} – {body}"]
    if message:
        parts.append(_sentence(message))
    if account_names:
        parts.append(f"Affected accounts: {', '.join(account_names)}.")
    return " ".join(parts)


def _validate(body: StatusUpdateIn, incident: Incident, now: datetime) -> None:
    if body.template in ("investigating", "identified") and not body.symptoms:
        raise ValidationFailed("symptoms", f"is required for the {body.template} notice")
    if body.template == "investigating" and body.eta is not None:
        raise ValidationFailed("eta", "an investigating notice has no ETA (unknown)")
    if body.template == "identified" and body.eta is None:
        raise ValidationFailed("eta", "is required for an identified notice")
    if body.template == "resolved" and body.eta is not None:
        raise ValidationFailed("eta", "a resolved notice has no ETA")
    if incident.state == "closed":
        raise Conflict(f"incident '{incident.id}' is closed", slug="incident-closed")
    resolved = incident.state == "resolved"
    if body.template == "resolved" and not resolved:
        raise Conflict(
            "resolve the incident before posting a resolved notice",
            slug="incident-not-resolved",
            field_name="template",
        )
    if body.template != "resolved" and resolved:
        raise Conflict(
            "the incident is resolved: only a resolved notice may follow",
            slug="incident-resolved",
            field_name="template",
        )


async def _account_names(session: AsyncSession, ids: list[str]) -> list[str]:
    if not ids:
        return []
    rows = await account_names(session, ids)
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValidationFailed("accounts", f"unknown account(s): {', '.join(missing[:10])}")
    return [str(rows[i]) for i in dict.fromkeys(ids)]


async def post_notice(
    session: AsyncSession,
    incident: Incident,
    body: StatusUpdateIn,
    now: datetime,
    key_id: str | None,
) -> IncidentStatusUpdate:
    """Store the notice; the caller stamps the incident's last update (the 30-minute clock)."""
    _validate(body, incident, now)
    names = await _account_names(session, body.accounts)
    notice = IncidentStatusUpdate(
        id=new_id("sta"),
        incident_id=incident.id,
        template=body.template,
        service=incident.service,
        symptoms=body.symptoms,
        eta=body.eta,
        message=body.message,
        accounts=names,
        text=render(body.template, incident.service, body.symptoms, body.eta, body.message, names),
        posted_at=now,
        posted_by=key_id,
        expires_at=now + RESOLVED_LIVES if body.template == "resolved" else None,
    )
    session.add(notice)
    await session.flush()
    return notice


def notice_out(notice: IncidentStatusUpdate) -> StatusUpdateOut:
    return StatusUpdateOut(
        id=notice.id,
        incident=notice.incident_id,
        template=notice.template,
        service=notice.service,
        symptoms=notice.symptoms,
        eta=notice.eta,
        message=notice.message,
        accounts=list(notice.accounts),
        text=notice.text,
        posted_at=notice.posted_at,
        expires_at=notice.expires_at,
    )


async def list_notices(
    session: AsyncSession, incident_id: str, page: PageRequest
) -> tuple[list[IncidentStatusUpdate], str | None]:
    return await notices_of_incident(session, incident_id, page)


async def live_feed(session: AsyncSession, now: datetime) -> list[FeedNotice]:
    """Each incident's newest notice, if it is still live; newest first."""
    return [
        FeedNotice(
            id=n.id,
            incident=n.incident_id,
            template=n.template,
            service=n.service,
            text=n.text,
            symptoms=n.symptoms,
            eta=n.eta,
            accounts=list(n.accounts),
            posted_at=n.posted_at,
            expires_at=n.expires_at,
        )
        for n in await live_notices(session, now)
    ]
