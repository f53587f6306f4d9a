"""`/v1/accounts` and the account's queue integration."""

from __future__ import annotations

from fastapi import APIRouter, Header, Response, status

from dispatch_engine.api.deps import (
    CONFIG_ROLES,
    ConfigActor,
    ReadActor,
    SessionDep,
    require_account,
)
from dispatch_engine.models import new_id
from dispatch_engine.queues.factory import build_sender
from dispatch_engine.schemas.accounts import AccountCreate, AccountOut, AccountPatch
from dispatch_engine.schemas.integrations import IntegrationIn, IntegrationOut, VerifyResult
from dispatch_engine.schemas.queue_message import build_probe, encode_message
from dispatch_engine.services import accounts as service
from dispatch_engine.services import integrations
from dispatch_engine.services.etags import check_if_match, etag
from dispatch_engine.store.accounts import accounts_by_id
from dispatch_engine.store.accounts import get_account as load_account

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AccountOut)
async def create_account(
    body: AccountCreate, actor: ConfigActor, session: SessionDep, response: Response
) -> AccountOut:
    """Create an account; its sandbox policy is created with it."""
    require_account(actor.principal, body.id, *CONFIG_ROLES)
    async with session.begin():
        account = await service.create_account(session, body, actor.now())
        out = service.account_out(account)
        actor.audit(
            session,
            "account.create",
            "account",
            account.id,
            account_id=account.id,
            after=out.model_dump(mode="json"),
        )
    response.headers["ETag"] = etag(out.version)
    response.headers["Location"] = f"/v1/accounts/{out.id}"
    return out


@router.get("", response_model=list[AccountOut])
async def list_accounts(actor: ReadActor, session: SessionDep) -> list[AccountOut]:
    """Accounts this key can see (a backend key limited to one account sees that one)."""
    only = actor.principal.account_id if actor.principal.role == "backend" else None
    async with session.begin():
        return [service.account_out(a) for a in await accounts_by_id(session, only)]


@router.get("/{account_id}", response_model=AccountOut)
async def get_account(
    account_id: str, actor: ReadActor, session: SessionDep, response: Response
) -> AccountOut:
    async with session.begin():
        out = service.account_out(await load_account(session, account_id))
    response.headers["ETag"] = etag(out.version)
    return out


@router.patch("/{account_id}", response_model=AccountOut)
async def patch_account(
    account_id: str,
    body: AccountPatch,
    actor: ConfigActor,
    session: SessionDep,
    response: Response,
    if_match: str | None = Header(default=None),
) -> AccountOut:
    """Edit name and contacts. If-Match is checked when sent."""
    async with session.begin():
        account = await load_account(session, account_id, lock=True)
        check_if_match(if_match, account.version)
        before = service.account_snapshot(account)
        patch = body.model_dump(exclude_unset=True)
        account = await service.patch_account(session, account_id, patch, actor.now())
        out = service.account_out(account)
        actor.audit(
            session,
            "account.update",
            "account",
            account_id,
            account_id=account_id,
            before=before,
            after=out.model_dump(mode="json"),
        )
    response.headers["ETag"] = etag(out.version)
    return out


@router.put("/{account_id}/queue-integration", response_model=IntegrationOut)
async def put_integration(
    account_id: str, body: IntegrationIn, actor: ConfigActor, session: SessionDep
) -> IntegrationOut:
    """Set where the account's messages go. Secrets are write-only and stored encrypted.
    Only an admin key may set an SQS `endpoint_url`; every host must pass the outgoing-URL
    rules (422 naming the field)."""
    async with session.begin():
        integration, before = await integrations.put_integration(
            session,
            account_id,
            body,
            actor.context.cipher,
            actor.now(),
            policy=actor.context.url_policy,
            role=actor.principal.role,
        )
        out = integrations.integration_out(integration)
        actor.audit(
            session,
            "queue_integration.put",
            "queue_integration",
            account_id,
            account_id=account_id,
            before=before,
            after=out.model_dump(mode="json"),
        )
    return out


@router.get("/{account_id}/queue-integration", response_model=IntegrationOut)
async def get_integration(account_id: str, actor: ReadActor, session: SessionDep) -> IntegrationOut:
    async with session.begin():
        return integrations.integration_out(await integrations.get_integration(session, account_id))


@router.post("/{account_id}/queue-integration/verify", response_model=VerifyResult)
async def verify_integration(
    account_id: str, actor: ReadActor, session: SessionDep
) -> VerifyResult:
    """Send a probe message through the integration and report what the queue said."""
    async with session.begin():
        integration = await integrations.get_integration(session, account_id)
        session.expunge(integration)
    now = actor.now()
    probe = build_probe(message_id=new_id("probe"), account=account_id, sent_at=now)
    error: str | None = None
    sender = build_sender(actor.context, integration)
    if sender is None:
        error = f"queue kind '{integration.kind}' has no sender"
    else:
        try:
            await sender.probe(encode_message(probe), probe.message_id)
        except Exception as exc:  # the provider's reason, in plain words, for the caller
            error = plain_error(exc)
        finally:
            await sender.aclose()
    async with session.begin():
        stored = await integrations.get_integration(session, account_id)
        stored.verified_at = now if error is None else stored.verified_at
        stored.verify_error = error
        if error is None:  # the queue takes messages again: an earlier refusal is history
            stored.push_error = stored.push_error_at = None
        actor.audit(
            session,
            "queue_integration.verify",
            "queue_integration",
            account_id,
            account_id=account_id,
            after={"ok": error is None, "error": error},
        )
        verified_at = stored.verified_at
    return VerifyResult(
        ok=error is None,
        kind=integration.kind,
        message_id=probe.message_id,
        verified_at=verified_at,
        error=error,
    )


def plain_error(exc: Exception) -> str:
    """A sender's reason when it gives one; otherwise the error's type, never its details."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else f"{type(exc).__name__}: the queue refused the probe"
