"""`/v1/admin/notification-webhooks`: where incident notifications go (R-INC-8).

URLs are validated against the SSRF rules when configured (and again, with DNS, on every
call); they are stored encrypted and shown by origin only, since a Slack-style webhook
URL is itself the credential.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from dispatch_engine.api.deps import OperatorActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.incidents import notifications as service
from dispatch_engine.store.notification_webhooks import drop_notifications_of_webhook

router = APIRouter(prefix="/v1/admin/notification-webhooks", tags=["notification webhooks"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=service.WebhookOut,
    summary="Add a notification webhook",
    description=doc(
        """
        Adds an outbound webhook (e.g. a Slack incoming webhook) that receives incident
        events: `incident.created`, `incident.state_changed`, `incident.status_update`,
        `incident.clock_overdue` (`events` limits them; empty means all). The worker posts
        them (Slack-compatible `text` plus structured fields) with retries; a request never
        waits for it. The URL must pass the outgoing-URL rules (https, no private or
        loopback address unless allow-listed, no credentials); it is stored encrypted and
        only its origin is ever shown. `operator` and `admin` keys. Audited.
        """
    ),
    responses=problems(401, 403, *BODY),
)
async def create_webhook(
    body: service.WebhookIn, actor: OperatorActor, session: SessionDep
) -> service.WebhookOut:
    """Add a webhook; `events` limits what it receives (default: every incident event)."""
    async with session.begin():
        webhook = await service.create_webhook(
            session,
            body,
            cipher=actor.context.cipher,
            policy=actor.context.url_policy,
            now=actor.now(),
            key_id=actor.principal.key_id,
        )
        out = service.webhook_out(webhook)
        actor.audit(
            session,
            "notification_webhook.create",
            "notification_webhook",
            webhook.id,
            after=out.model_dump(mode="json"),
        )
    return out


@router.get(
    "",
    response_model=list[service.WebhookOut],
    summary="List notification webhooks",
    description="The configured webhooks with the events each receives; URLs are shown by "
    "origin only (the path may hold a token), oldest first, a page at a time. `operator` "
    "and `admin` keys.",
    responses=problems(401, 403, 422),
)
async def list_webhooks(
    actor: OperatorActor, session: SessionDep, pager: PagerDep
) -> list[service.WebhookOut]:
    """The operators' notification webhooks, oldest first."""
    async with session.begin():
        webhooks, next_cursor = await service.list_webhooks(session, pager.page)
    pager.next_page(next_cursor)
    return [service.webhook_out(w) for w in webhooks]


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a notification webhook",
    description="Removes the webhook; its notifications not yet delivered are dropped with "
    "it. `operator` and `admin` keys. Audited.",
    responses=problems(401, 403, 404, 422),
)
async def delete_webhook(webhook_id: str, actor: OperatorActor, session: SessionDep) -> Response:
    """Remove a webhook; its undelivered notifications are dropped with it."""
    async with session.begin():
        webhook = await service.get_webhook(session, webhook_id)
        before = service.webhook_out(webhook).model_dump(mode="json")
        await drop_notifications_of_webhook(session, webhook.id)
        await session.delete(webhook)
        actor.audit(
            session,
            "notification_webhook.delete",
            "notification_webhook",
            webhook_id,
            before=before,
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
