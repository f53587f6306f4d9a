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
from dispatch_engine.errors import NotImplementedYet
from dispatch_engine.schemas.accounts import AccountCreate, AccountOut, AccountPatch
from dispatch_engine.schemas.integrations import IntegrationIn, IntegrationOut
from dispatch_engine.services import accounts as service
from dispatch_engine.services import integrations
from dispatch_engine.services.etags import check_if_match, etag
from dispatch_engine.services.policies import get_account as load_account

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
    return out


@router.get("", response_model=list[AccountOut])
async def list_accounts(actor: ReadActor, session: SessionDep) -> list[AccountOut]:
    """Accounts this key can see (a backend key limited to one account sees that one)."""
    only = actor.principal.account_id if actor.principal.role == "backend" else None
    async with session.begin():
        return [service.account_out(a) for a in await service.list_accounts(session, only)]


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
        check_if_match(if_match, account.version, required=False)
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
    """Set where the account's messages go. Secrets are write-only and stored encrypted."""
    async with session.begin():
        integration, before = await integrations.put_integration(
            session, account_id, body, actor.context.cipher, actor.now()
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


@router.post("/{account_id}/queue-integration/verify", response_model=None)
async def verify_integration(account_id: str, actor: ReadActor, session: SessionDep) -> None:
    """Send a probe message through the integration (arrives with queue delivery)."""
    async with session.begin():
        await integrations.get_integration(session, account_id)
    raise NotImplementedYet("verifying a queue integration arrives with queue delivery")
