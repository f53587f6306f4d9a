"""Storing an account's queue integration; secrets go through the field cipher only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Conflict, NotFound
from dispatch_engine.models import QueueIntegration
from dispatch_engine.schemas.integrations import (
    AzureServiceBusIntegrationIn,
    IntegrationOut,
    LocalIntegrationIn,
    SqsIntegrationIn,
)
from dispatch_engine.security.crypto import FieldCipher
from dispatch_engine.security.sealing import integration_secret_aad
from dispatch_engine.security.ssrf import UrlPolicy
from dispatch_engine.services.integration_endpoints import check_endpoint_role, check_endpoints
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.integrations import find_integration

SECRET_FIELDS = ("secret_access_key", "connection_string")


def _split(
    body: SqsIntegrationIn | AzureServiceBusIntegrationIn | LocalIntegrationIn,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Non-secret config and the secret values of a request body."""
    data = body.model_dump(exclude={"kind", *SECRET_FIELDS}, exclude_none=True)
    secrets = {
        name: getattr(body, name).get_secret_value()
        for name in SECRET_FIELDS
        if getattr(body, name, None) is not None
    }
    if isinstance(body, SqsIntegrationIn):
        data["fifo"] = body.fifo
    return data, secrets


async def put_integration(
    session: AsyncSession,
    account_id: str,
    body: SqsIntegrationIn | AzureServiceBusIntegrationIn | LocalIntegrationIn,
    cipher: FieldCipher,
    now: datetime,
    *,
    policy: UrlPolicy,
    role: str,
) -> tuple[QueueIntegration, dict[str, Any] | None]:
    """Create or replace the whole integration (PUT semantics: secrets are sent again).

    The caller's ``role`` decides whether it may choose an SQS endpoint; every host must pass
    the outgoing-URL ``policy`` (services/integration_endpoints.py)."""
    await get_account(session, account_id, lock=True)  # one PUT per account at a time
    existing = await find_integration(session, account_id)
    check_endpoint_role(body, existing, role)
    check_endpoints(body, policy)
    config, secrets = _split(body)
    before = integration_snapshot(existing) if existing else None
    secret = (
        cipher.encrypt_json(secrets, aad=integration_secret_aad(account_id)) if secrets else None
    )
    if existing is None:
        existing = QueueIntegration(
            account_id=account_id,
            kind=body.kind,
            config=config,
            secret=secret,
            created_at=now,
            updated_at=now,
        )
        session.add(existing)
    else:
        existing.kind = body.kind
        existing.config = config
        existing.secret = secret
        existing.version += 1
        existing.updated_at = now
        existing.verified_at = None
        existing.verify_error = None
        existing.push_error = None  # the new settings have not been refused yet
        existing.push_error_at = None
    await session.flush()
    return existing, before


async def get_integration(session: AsyncSession, account_id: str) -> QueueIntegration:
    await get_account(session, account_id)
    integration = await find_integration(session, account_id)
    if integration is None:
        raise NotFound(f"queue integration of account '{account_id}'")
    return integration


async def require_local_queue(session: AsyncSession, account_id: str) -> None:
    """404 for an unknown account; 409 unless its messages go to the `local` queue (the
    pull/ack endpoints and `queue tail` would otherwise answer "empty" forever)."""
    await get_account(session, account_id)
    integration = await find_integration(session, account_id)
    if integration is None:
        raise Conflict(
            f"account '{account_id}' has no queue integration; PUT one with kind 'local'",
            slug="not-local-queue",
        )
    if integration.kind != "local":
        raise Conflict(
            f"account '{account_id}' sends to its '{integration.kind}' queue, not the local "
            "queue; read the messages there",
            slug="not-local-queue",
        )


def integration_out(integration: QueueIntegration) -> IntegrationOut:
    return IntegrationOut(
        account=integration.account_id,
        kind=integration.kind,
        config=dict(integration.config),
        secret_set=integration.secret is not None,
        fifo=bool(integration.config.get("fifo", False)),
        version=integration.version,
        created_at=integration.created_at,
        updated_at=integration.updated_at,
        verified_at=integration.verified_at,
        verify_error=integration.verify_error,
        push_error=integration.push_error,
        push_error_at=integration.push_error_at,
    )


def integration_snapshot(integration: QueueIntegration) -> dict[str, Any]:
    return integration_out(integration).model_dump(mode="json")
