"""Accounts (R-ACC-1): created with their sandbox policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch_engine.db.session import AsyncSession, IntegrityError
from dispatch_engine.errors import Conflict, ValidationFailed
from dispatch_engine.models import Account
from dispatch_engine.schemas.accounts import AccountCreate, AccountOut
from dispatch_engine.services.policies import new_sandbox_policy, record_version
from dispatch_engine.store.accounts import find_account, get_account


def account_out(account: Account) -> AccountOut:
    return AccountOut.model_validate(
        {
            "id": account.id,
            "name": account.name,
            "owner": account.owner,
            "admins": account.admins,
            "decision_maker": account.decision_maker,
            "version": account.version,
            "created_at": account.created_at,
            "updated_at": account.updated_at,
        }
    )


def account_snapshot(account: Account) -> dict[str, Any]:
    return account_out(account).model_dump(mode="json")


async def create_account(
    session: AsyncSession, body: AccountCreate, now: datetime, key_id: str | None = None
) -> Account:
    """The account and its sandbox policy, whose version 1 `key_id` made."""
    if await find_account(session, body.id) is not None:
        raise Conflict(
            f"account '{body.id}' already exists", slug="account-exists", field_name="id"
        )
    account = Account(
        id=body.id,
        name=body.name,
        owner=body.owner.model_dump() if body.owner else None,
        admins=[admin.model_dump() for admin in body.admins],
        decision_maker=body.decision_maker.model_dump() if body.decision_maker else None,
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:  # a racing create of the same id won
        raise Conflict(
            f"account '{body.id}' already exists", slug="account-exists", field_name="id"
        ) from None
    sandbox = new_sandbox_policy(account.id, now)
    session.add(sandbox)
    await session.flush()
    record_version(session, sandbox, [], "account.create", key_id, now)
    await session.flush()
    return account


async def patch_account(
    session: AsyncSession, account_id: str, patch: dict[str, Any], now: datetime
) -> Account:
    """Apply the fields given; the version (ETag) moves only when something changed."""
    account = await get_account(session, account_id)
    if "name" in patch and patch["name"] is None:
        raise ValidationFailed("name", "an account always has a name; give the new one")
    changed = False
    for field in ("name", "owner", "admins", "decision_maker"):
        if field in patch:
            value = patch[field] if field != "admins" else patch[field] or []
            if getattr(account, field) != value:
                setattr(account, field, value)
                changed = True
    if changed:
        account.version += 1
        account.updated_at = now
    return account
