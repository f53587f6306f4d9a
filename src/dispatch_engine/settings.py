"""Settings from the environment (prefix DISPATCH_) or a .env file: one object, built once."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything configurable. See the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCH_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,  # inputs include key rings and database passwords
    )

    env: Literal["dev", "prod"] = "dev"
    data_dir: Path = Path(".dispatch-engine")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    log_json: bool = True

    # Key rings: "id:base64key,id2:base64key" — the first entry is used for new writes.
    encryption_keys: SecretStr | None = None
    hmac_keys: SecretStr | None = None

    # Outgoing webhooks (DND, incident notifications): https only unless allowed.
    webhook_allow_http: bool = False
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_connect_timeout: float = 2.0
    webhook_read_timeout: float = 3.0

    # Incident resend rule (R-INC-5).
    resend_threshold_minutes: int = Field(default=60, ge=0)

    # Worker.
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        description="Recorded on every message a worker decides (observability, tests).",
    )
    run_scheduler: bool = True
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="`worker` serves Prometheus metrics on this port (the API serves /metrics).",
    )
    claim_batch_size: int = Field(default=500, ge=1, le=10_000)
    claim_lease_seconds: int = Field(
        default=60,
        ge=5,
        description="Bounds every claim: a leased claim comes back after it, and PostgreSQL "
        "ends a session whose transaction stays idle this long (a frozen or cut-off worker).",
    )
    db_statement_timeout_seconds: int = Field(
        default=300,
        ge=0,
        description="PostgreSQL statement_timeout of the service's sessions (0: none).",
    )
    db_pgbouncer: bool = Field(
        default=False,
        description="DISPATCH_DATABASE_URL points at PgBouncer (or another pooler) in "
        "transaction mode: no named prepared statements, and the session limits set per "
        "transaction instead of at connect (docs/operations.md, PgBouncer).",
    )
    # Rounds a worker runs at once on PostgreSQL (SQLite always runs one).
    claim_concurrency: int = Field(default=3, ge=1, le=16)
    claim_interval_seconds: float = Field(default=1.0, gt=0)
    dnd_max_failures: int = Field(default=5, ge=1)
    dnd_retry_seconds: int = Field(default=60, ge=1)
    dnd_concurrency: int = Field(default=64, ge=1)
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_interval_seconds: float = Field(default=0.5, gt=0)
    relay_parallel: int = Field(default=3, ge=1, le=32)
    relay_max_attempts: int = Field(default=8, ge=1)
    relay_backoff_seconds: float = Field(default=2.0, gt=0)
    relay_backoff_max_seconds: float = Field(default=300.0, gt=0)
    relay_breaker_threshold: int = Field(default=5, ge=1)
    relay_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    sqs_max_message_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    sqs_max_batch_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    sqs_concurrency: int = Field(default=8, ge=1, le=256)
    delayed_after_seconds: int = Field(default=900, ge=1)
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)
    decision_retention_days: int = Field(
        default=90,
        ge=0,
        description="Days the decision trace (message_decisions) is kept; 0 keeps it forever.",
    )
    upload_batch_rows: int = Field(default=10_000, ge=1, le=50_000)
    upload_lease_seconds: int = Field(
        default=30,
        ge=3,
        description="A contact file's request renews its batch's lease every third of this; "
        "a batch not renewed for this long is `interrupted` and its Idempotency-Key can be "
        "retried.",
    )

    @field_validator("webhook_allowlist", mode="before")
    @classmethod
    def _allowlist_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("encryption_keys", "hmac_keys")
    @classmethod
    def _key_ring(cls, value: SecretStr | None) -> SecretStr | None:
        """A malformed ring is a configuration error at start, before anything runs (the
        parser's messages name a position or key id, never key material)."""
        if value is not None and value.get_secret_value().strip():
            from dispatch_engine.security.crypto import parse_key_ring

            parse_key_ring(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "prod":
            missing = [
                name
                for name, value in (
                    ("DISPATCH_ENCRYPTION_KEYS", self.encryption_keys),
                    ("DISPATCH_HMAC_KEYS", self.hmac_keys),
                    ("DISPATCH_DATABASE_URL", self.database_url),
                )
                if not value
            ]
            if missing:
                raise ValueError("DISPATCH_ENV=prod refuses to start without " + ", ".join(missing))
            if self.webhook_allow_http:
                raise ValueError("DISPATCH_WEBHOOK_ALLOW_HTTP must be false in production")
        return self

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or a SQLite file inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'dispatch-engine.db').resolve()}"
