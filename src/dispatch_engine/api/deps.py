"""Request dependencies: the app context, a session, and the authenticated API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from dispatch_engine.context import AppContext
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Forbidden, NotFound, Unauthenticated
from dispatch_engine.security.api_keys import parse_key, secret_matches
from dispatch_engine.store.api_keys import api_key_by_prefix
from dispatch_engine.store.audit import record_audit


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and role, and the one account a backend key may be tied to."""

    key_id: str
    role: str
    account_id: str | None

    def can_see_account(self, account_id: str) -> bool:
        if self.role in ("admin", "operator"):
            return True
        return self.account_id is None or self.account_id == account_id


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


async def _session(context: ContextDep) -> AsyncIterator[AsyncSession]:
    """A session per request; the route opens the transaction (`async with session.begin()`)."""
    async with context.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]


class BearerApiKey(SecurityBase):
    """The `Authorization` header exactly as sent, declared to OpenAPI as HTTP Bearer (so
    Swagger UI has an Authorize button and every operation that needs a key shows the lock).

    Unlike FastAPI's `HTTPBearer` it parses nothing and never answers itself:
    `current_principal` checks the header, so a refusal is always our 401 problem."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="de_<prefix>_<secret>",
            description="An API key (`dispatch-engine apikey create --role admin` makes the "
            "first; then `POST /v1/api-keys`), sent as `Authorization: Bearer <key>`. Its "
            "role decides what it may do: `backend` (EM; may be limited to one account), "
            "`operator`, `admin`.",
        )
        self.scheme_name = "apiKey"

    async def __call__(self, request: Request) -> str | None:
        return request.headers.get("authorization")


bearer_api_key = BearerApiKey()


async def current_principal(
    context: ContextDep,
    authorization: Annotated[str | None, Depends(bearer_api_key)],
) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated()
    parsed = parse_key(authorization[7:].strip())
    if parsed is None:
        raise Unauthenticated("the API key is malformed")
    prefix, secret = parsed
    async with context.sessions() as session:
        key = await api_key_by_prefix(session, prefix)
    if key is None or key.revoked_at is not None or not secret_matches(secret, key.secret_hash):
        raise Unauthenticated("the API key is unknown or revoked")
    return Principal(key_id=key.id, role=key.role, account_id=key.account_id)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise Forbidden(
            f"role '{principal.role}' may not do this; needs one of: {', '.join(roles)}"
        )


def require_account(principal: Principal, account_id: str, *roles: str) -> None:
    """A key that may not see the account gets 404, so account ids do not leak."""
    if not principal.can_see_account(account_id):
        raise NotFound(f"account '{account_id}'")
    if roles:
        require_roles(principal, *roles)


READ_ROLES = ("admin", "operator", "backend")
CONFIG_ROLES = ("admin", "backend")
CONTROL_ROLES = ("admin", "operator", "backend")
OPERATOR_ROLES = ("admin", "operator")


@dataclass(frozen=True)
class Actor:
    """The caller plus the app context: what a route needs to change things and audit them."""

    principal: Principal
    context: AppContext

    def now(self) -> datetime:
        return self.context.clock.now()

    def audit(
        self,
        session: AsyncSession,
        action: str,
        target_type: str,
        target_id: str,
        *,
        account_id: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        incident: str | None = None,
    ) -> None:
        record_audit(
            session,
            at=self.now(),
            key_id=self.principal.key_id,
            role=self.principal.role,
            action=action,
            target_type=target_type,
            target_id=target_id,
            account_id=account_id,
            before=before,
            after=after,
            incident=incident,
        )


def _actor(principal: PrincipalDep, context: ContextDep) -> Actor:
    return Actor(principal, context)


ActorDep = Annotated[Actor, Depends(_actor)]


def _allow(*roles: str) -> Any:
    """A dependency that authorises before the body is even validated: wrong role → 403,
    another account's path → 404 (so ids do not leak)."""

    async def dependency(request: Request, actor: ActorDep) -> Actor:
        account_id = request.path_params.get("account_id")
        if account_id is not None:
            require_account(actor.principal, account_id, *roles)
        else:
            require_roles(actor.principal, *roles)
        return actor

    return Depends(dependency)


ReadActor = Annotated[Actor, _allow(*READ_ROLES)]
ConfigActor = Annotated[Actor, _allow(*CONFIG_ROLES)]
ControlActor = Annotated[Actor, _allow(*CONTROL_ROLES)]
OperatorActor = Annotated[Actor, _allow(*OPERATOR_ROLES)]
AdminActor = Annotated[Actor, _allow("admin")]
