"""Incident notification webhooks (R-INC-8): configuration, an outbox, and its drain.

Delivery never runs inside an API request: the change and its notification rows commit
together (`enqueue`), and the incident clock job drains them (`drain`) through the
SSRF-guarded HTTP client, retrying with exponential backoff a few times. The body is
Slack-compatible (`text`) plus structured fields (`event`, `incident`, …).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field

from dispatch_engine.clients.guarded_http import GuardedHttpClient
from dispatch_engine.context import AppContext
from dispatch_engine.db import leases
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import NotFound, ValidationFailed
from dispatch_engine.models import Incident, IncidentNotification, NotificationWebhook, new_id
from dispatch_engine.schemas.common import StrictModel
from dispatch_engine.security.crypto import FieldCipher
from dispatch_engine.security.sealing import webhook_url_aad
from dispatch_engine.security.ssrf import GuardedHttpError, UnsafeUrlError, UrlPolicy, validate_url
from dispatch_engine.store import notifications as store
from dispatch_engine.store.notifications import ClaimedNotification
from dispatch_engine.store.paging import PageRequest

log = structlog.get_logger(__name__)

Event = Literal[
    "incident.created", "incident.state_changed", "incident.status_update", "incident.clock_overdue"
]
EVENTS: tuple[str, ...] = (
    "incident.created",
    "incident.state_changed",
    "incident.status_update",
    "incident.clock_overdue",
)
MAX_ATTEMPTS = 5
# Retries wait exactly 10 s, 20 s, 40 s, … (no jitter): one drain job sends them, so there
# are no racers to spread, and the schedule is part of the tested behaviour.
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 600.0
LEASE = timedelta(seconds=60)
DRAIN_BATCH = 100
CONCURRENCY = 8


class WebhookIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "ops-slack",
                    "url": "https://hooks.slack.com/services/T0000/B0000/XXXXXXXX",
                    "events": ["incident.created", "incident.state_changed"],
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=8, max_length=2048, description="e.g. a Slack incoming webhook")
    events: list[Event] = Field(
        default_factory=list, description="Events to receive; empty means all."
    )


class WebhookOut(BaseModel):
    id: str
    name: str
    origin: str = Field(description="Scheme, host and port only: the path may hold a token.")
    events: list[str]
    created_at: datetime


def webhook_out(webhook: NotificationWebhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        name=webhook.name,
        origin=webhook.origin,
        events=list(webhook.events) or list(EVENTS),
        created_at=webhook.created_at,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def create_webhook(
    session: AsyncSession,
    body: WebhookIn,
    *,
    cipher: FieldCipher,
    policy: UrlPolicy,
    now: datetime,
    key_id: str | None,
) -> NotificationWebhook:
    """Validate the URL now (the guarded client checks it again, with DNS, at call time)."""
    try:
        url = validate_url(body.url, policy)
    except UnsafeUrlError as exc:
        raise ValidationFailed("url", str(exc)) from None
    webhook_id = new_id("wh")
    webhook = NotificationWebhook(
        id=webhook_id,
        name=body.name,
        url=cipher.encrypt(url, aad=webhook_url_aad(webhook_id)),
        origin=_origin(url),
        events=sorted(set(body.events)),
        created_at=now,
        created_by=key_id,
    )
    session.add(webhook)
    await session.flush()
    return webhook


async def list_webhooks(
    session: AsyncSession, page: PageRequest
) -> tuple[list[NotificationWebhook], str | None]:
    return await store.webhooks_page(session, page)


async def get_webhook(session: AsyncSession, webhook_id: str) -> NotificationWebhook:
    webhook = await store.find_webhook(session, webhook_id)
    if webhook is None:
        raise NotFound(f"notification webhook '{webhook_id}'")
    return webhook


def incident_summary(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "service": incident.service,
        "severity": incident.severity,
        "state": incident.state,
        "started_at": incident.started_at.isoformat(),
        "commander": incident.commander,
    }


async def enqueue(
    session: AsyncSession,
    event: Event,
    incident: Incident,
    text: str,
    now: datetime,
    **fields: Any,
) -> int:
    """One outbox row per webhook subscribed to `event`, in the caller's transaction."""
    webhooks = await store.all_webhooks(session)
    payload = {
        "text": text,
        "event": event,
        "at": now.isoformat(),
        "incident": incident_summary(incident),
        **fields,
    }
    count = 0
    for webhook in webhooks:
        if webhook.events and event not in webhook.events:
            continue
        session.add(
            IncidentNotification(
                webhook_id=webhook.id,
                event=event,
                incident_id=incident.id,
                payload=payload,
                created_at=now,
                next_attempt_at=now,
                attempts=0,
            )
        )
        count += 1
    if count:
        await session.flush()
    return count


@dataclass
class DrainResult:
    delivered: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.failed


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    retryable: bool
    error: str | None = None


# A claimed notification (the row's columns) and the webhook it goes to.
_Claimed = tuple[ClaimedNotification, NotificationWebhook]


async def _claim(session: AsyncSession, now: datetime) -> tuple[str, list[_Claimed]]:
    token, rows = await store.claim_due_notifications(session, now, limit=DRAIN_BATCH, lease=LEASE)
    if not rows:
        return token, []
    hooks = await store.webhooks_by_id(session, {r.webhook_id for r in rows})
    return token, [(r, hooks[r.webhook_id]) for r in rows if r.webhook_id in hooks]


async def _post(
    http: GuardedHttpClient,
    cipher: FieldCipher,
    row: ClaimedNotification,
    hook: NotificationWebhook,
) -> _Outcome:
    try:
        url = cipher.decrypt(hook.url, aad=webhook_url_aad(hook.id))
        response = await http.post_json(url, row.payload)
    except UnsafeUrlError as exc:
        return _Outcome(False, retryable=False, error=f"refused: {exc}")
    except GuardedHttpError as exc:
        return _Outcome(False, retryable=True, error=str(exc))
    except Exception as exc:  # never let one webhook break the drain
        return _Outcome(False, retryable=True, error=type(exc).__name__)
    if response.is_success:
        return _Outcome(True, retryable=False)
    status = response.status_code
    retryable = status >= 500 or status in (408, 429)
    return _Outcome(False, retryable=retryable, error=f"HTTP {status} from {hook.origin}")


async def drain(context: AppContext, http: GuardedHttpClient) -> DrainResult:
    """Send one batch of due notifications; returns what happened to them."""
    now = context.clock.now()
    async with context.sessions() as session:
        async with session.begin():
            token, claimed = await _claim(session, now)
        if not claimed:
            return DrainResult()
        gate = asyncio.Semaphore(CONCURRENCY)
        outcomes: list[_Outcome | None] = [None] * len(claimed)
        by_hook: dict[str, list[int]] = {}
        for index, (_, hook) in enumerate(claimed):
            by_hook.setdefault(hook.id, []).append(index)

        async def send_in_order(indexes: list[int]) -> None:
            """One webhook receives its events in the order they happened; different
            webhooks are served concurrently."""
            async with gate:
                for index in indexes:
                    row, hook = claimed[index]
                    outcomes[index] = await _post(http, context.cipher, row, hook)

        await asyncio.gather(*(send_in_order(indexes) for indexes in by_hook.values()))
        sent = [outcome for outcome in outcomes if outcome is not None]
        assert len(sent) == len(claimed)
        async with session.begin():
            return await _write_back(session, token, claimed, sent, now)


async def _write_back(
    session: AsyncSession,
    token: str,
    claimed: list[_Claimed],
    outcomes: list[_Outcome],
    now: datetime,
) -> DrainResult:
    result = DrainResult()
    rows: list[dict[str, Any]] = []
    for (row, hook), outcome in zip(claimed, outcomes, strict=True):
        attempts = row.attempts + 1
        values: dict[str, Any] = {
            "b_id": row.id,
            "attempts": attempts,
            "delivered_at": None,
            "failed_at": None,
            "next_attempt_at": row.next_attempt_at,
            "last_error": outcome.error,
        }
        if outcome.ok:
            values["delivered_at"] = now
            result.delivered += 1
        elif not outcome.retryable or attempts >= MAX_ATTEMPTS:
            values["failed_at"] = now
            result.failed += 1
            log.warning(
                "incident_notification_failed",
                webhook=hook.id,
                origin=hook.origin,
                notification=row.event,
                attempts=attempts,
                error=outcome.error,
            )
        else:
            values["next_attempt_at"] = now + leases.backoff(
                attempts, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, jitter=False
            )
            result.retried += 1
        rows.append(values)
    await store.write_back_notifications(session, token, rows)
    return result
