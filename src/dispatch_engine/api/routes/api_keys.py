"""`/v1/api-keys`: admin-only key management."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from dispatch_engine.api.deps import AdminActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.models import ApiKey
from dispatch_engine.schemas.accounts import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from dispatch_engine.services import api_keys as service
from dispatch_engine.store.api_keys import all_api_keys

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


def _out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        role=key.role,
        account=key.account_id,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description=doc(
        """
        Creates a key with a role: `backend` for the EM backend (optionally limited to one
        `account`, which need not exist yet), `operator` for the operations centre, `admin`
        for everything. The secret `key` is in this answer only: it is stored hashed and
        cannot be shown again. Admin keys only; audited.
        """
    ),
    responses=problems(401, 403, *BODY),
)
async def create_key(body: ApiKeyCreate, actor: AdminActor, session: SessionDep) -> ApiKeyCreated:
    """Create a key. The `key` field is shown in this response only."""
    async with session.begin():
        key, full = await service.create_api_key(
            session, role=body.role, account_id=body.account, name=body.name, now=actor.now()
        )
        actor.audit(session, "api_key.create", "api_key", key.id, after=service.key_snapshot(key))
    return ApiKeyCreated(**_out(key).model_dump(), key=full)


@router.get(
    "",
    response_model=list[ApiKeyOut],
    summary="List API keys",
    description="Every key, revoked ones included, with its role, account, name and id "
    "prefix (never the secret), oldest first, a page at a time. Admin keys only.",
    responses=problems(401, 403, 422),
)
async def list_keys(actor: AdminActor, session: SessionDep, pager: PagerDep) -> list[ApiKeyOut]:
    """Every key, revoked ones too, oldest first."""
    async with session.begin():
        keys, next_cursor = await all_api_keys(session, pager.page)
    pager.next_page(next_cursor)
    return [_out(key) for key in keys]


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
    description="The key stops working at once (its next request gets 401). It keeps its "
    "row, so the audit log still names it; revoking it again changes nothing. Admin keys "
    "only; audited.",
    responses=problems(401, 403, 404, 422),
)
async def revoke_key(key_id: str, actor: AdminActor, session: SessionDep) -> Response:
    """Revoke a key at once; it keeps its row so the audit log still names it."""
    async with session.begin():
        key = await service.revoke_api_key(session, key_id, actor.now())
        actor.audit(session, "api_key.revoke", "api_key", key.id, before=service.key_snapshot(key))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
