"""Everything a request or a job needs, built once from Settings (no import-time state)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dispatch_engine.clock import Clock, SystemClock
from dispatch_engine.db.engine import SessionLimits, build_engine, session_factory
from dispatch_engine.db.session import AsyncEngine, AsyncSession, async_sessionmaker
from dispatch_engine.db.stuck_sessions import APPLICATION_PREFIX
from dispatch_engine.security.crypto import FieldCipher, generate_key, parse_key_ring
from dispatch_engine.security.hashing import KeyedHasher
from dispatch_engine.security.ssrf import UrlPolicy
from dispatch_engine.settings import Settings

DEV_SECRETS_FILE = "secrets.json"


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    cipher: FieldCipher
    hasher: KeyedHasher
    url_policy: UrlPolicy

    async def aclose(self) -> None:
        await self.engine.dispose()


def build_context(settings: Settings, clock: Clock | None = None) -> AppContext:
    encryption_spec, hmac_spec = key_ring_specs(settings)
    enc_keys, enc_current = parse_key_ring(encryption_spec)
    mac_keys, mac_current = parse_key_ring(hmac_spec)
    engine = build_engine(
        settings.effective_database_url,
        limits=SessionLimits(
            idle_in_transaction_seconds=settings.claim_lease_seconds,
            statement_seconds=settings.db_statement_timeout_seconds,
            application_name=f"{APPLICATION_PREFIX} {settings.worker_id}",
        ),
        pgbouncer=settings.db_pgbouncer,
    )
    return AppContext(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        clock=clock or SystemClock(),
        cipher=FieldCipher(enc_keys, enc_current),
        hasher=KeyedHasher(mac_keys, mac_current),
        url_policy=UrlPolicy(
            allow_http=settings.webhook_allow_http,
            allowlist=tuple(settings.webhook_allowlist),
        ),
    )


def key_ring_specs(settings: Settings) -> tuple[str, str]:
    """The configured key rings; in dev, generated once into the data dir (mode 0600)."""
    enc = settings.encryption_keys.get_secret_value() if settings.encryption_keys else None
    mac = settings.hmac_keys.get_secret_value() if settings.hmac_keys else None
    if enc and mac:
        return enc, mac
    if settings.env != "dev":
        raise RuntimeError("DISPATCH_ENCRYPTION_KEYS and DISPATCH_HMAC_KEYS are required")
    stored = _load_or_create_dev_secrets(settings.data_dir / DEV_SECRETS_FILE)
    return enc or stored["encryption_keys"], mac or stored["hmac_keys"]


def _load_or_create_dev_secrets(path: Path) -> dict[str, str]:
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    path.parent.mkdir(parents=True, exist_ok=True)
    secrets = {
        "encryption_keys": f"dev1:{generate_key()}",
        "hmac_keys": f"dev1:{generate_key()}",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(secrets, handle)
    return secrets
