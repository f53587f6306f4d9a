"""Creating, listing and revoking API keys (R-ACC-2)."""

from __future__ import annotations

from datetime import datetime

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import NotFound, ValidationFailed
from dispatch_engine.models import ApiKey, new_id
from dispatch_engine.security.api_keys import ROLES, generate_key
from dispatch_engine.store.api_keys import find_api_key


def key_snapshot(key: ApiKey) -> dict[str, object]:
    """What the audit log keeps of a key: never the secret or its hash."""
    return {"id": key.id, "role": key.role, "account": key.account_id, "name": key.name}


async def create_api_key(
    session: AsyncSession,
    *,
    role: str,
    account_id: str | None,
    name: str | None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """Store a new key and return it with the full secret, which is never stored."""
    if role not in ROLES:
        raise ValidationFailed("role", f"must be one of {', '.join(ROLES)}")
    if account_id is not None and role != "backend":
        raise ValidationFailed("account", "only backend keys can be limited to one account")
    full_key, prefix, secret_hash = generate_key()
    key = ApiKey(
        id=new_id("key"),
        prefix=prefix,
        secret_hash=secret_hash,
        role=role,
        account_id=account_id,
        name=name,
        created_at=now,
    )
    session.add(key)
    await session.flush()
    return key, full_key


async def revoke_api_key(session: AsyncSession, key_id: str, now: datetime) -> ApiKey:
    key = await find_api_key(session, key_id)
    if key is None:
        raise NotFound(f"API key '{key_id}'")
    if key.revoked_at is None:
        key.revoked_at = now
    return key
