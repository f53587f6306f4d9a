"""Queue integrations (R-ACC-3): sqs, azure_service_bus or the embedded local queue.

Secret fields are write-only: accepted, stored encrypted, never returned.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from dispatch_engine.schemas.common import StrictModel

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_AWS_QUEUE_HOST = re.compile(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_LEGACY_QUEUE_HOST = re.compile(r"^(?:([a-z0-9-]+)\.)?queue\.amazonaws\.com(\.cn)?$")


def _aws_region_of(host: str) -> str | None:
    """The region an AWS queue host names (also the legacy REGION.queue.amazonaws.com form;
    bare queue.amazonaws.com is us-east-1), or None for other hosts."""
    match = _AWS_QUEUE_HOST.match(host)
    if match:
        return match.group(1)
    legacy = _LEGACY_QUEUE_HOST.match(host)
    if legacy:
        return legacy.group(1) or "us-east-1"
    return None


_SB_ENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,259}$")
_SB_NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]\.servicebus\.[a-z0-9.]+$")


def _http_url(value: str, what: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL")
    if parsed.username or parsed.password:
        raise ValueError(f"{what} must not carry credentials")
    return value


class SqsIntegrationIn(StrictModel):
    kind: Literal["sqs"]
    queue_url: str = Field(
        examples=["https://sqs.eu-west-1.amazonaws.com/123456789012/invitations.fifo"],
        description="A name ending in .fifo makes it a FIFO queue.",
    )
    region: str = Field(examples=["eu-west-1"])
    endpoint_url: str | None = Field(
        default=None, description="For SQS-compatible servers; default: the AWS endpoint."
    )
    access_key_id: str | None = Field(
        default=None, description="Optional; without it the default AWS credential chain runs."
    )
    secret_access_key: SecretStr | None = Field(default=None, description="Write-only.")

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError("must be an AWS region such as eu-west-1")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "endpoint_url")

    @model_validator(mode="after")
    def _queue_url_shape(self) -> SqsIntegrationIn:
        _http_url(self.queue_url, "queue_url")
        parsed = urlparse(self.queue_url)
        parts = [p for p in parsed.path.split("/") if p]
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) != 12:
            raise ValueError(
                "queue_url must look like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
            )
        name = parts[1].removesuffix(".fifo")
        if not _QUEUE_NAME.match(name):
            raise ValueError("queue name: 1-80 letters, digits, '-' or '_' (plus .fifo)")
        host_region = _aws_region_of(parsed.hostname or "")
        if host_region and host_region != self.region:
            raise ValueError(f"queue_url is in region {host_region} but region is {self.region}")
        if not host_region and self.endpoint_url is None and parsed.scheme != "https":
            raise ValueError("queue_url must be https unless endpoint_url is given")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self

    @property
    def fifo(self) -> bool:
        return self.queue_url.rstrip("/").endswith(".fifo")


class AzureServiceBusIntegrationIn(StrictModel):
    kind: Literal["azure_service_bus"]
    connection_string: SecretStr | None = Field(
        default=None,
        description="Write-only. Endpoint=sb://NS.servicebus.windows.net/;"
        "SharedAccessKeyName=…;SharedAccessKey=…",
    )
    namespace: str | None = Field(
        default=None,
        description="Fully qualified namespace (NS.servicebus.windows.net) when using Azure "
        "AD credentials instead of a connection string.",
    )
    queue_name: str | None = None
    topic_name: str | None = None

    @field_validator("queue_name", "topic_name")
    @classmethod
    def _entity(cls, value: str | None) -> str | None:
        if value is not None and not _SB_ENTITY.match(value):
            raise ValueError("must be a Service Bus entity name (letters, digits, . _ - /)")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _SB_NAMESPACE.match(value):
            raise ValueError(
                "must be a fully qualified namespace such as NS.servicebus.windows.net, NS "
                "being Azure's 6 to 50 letters, digits and hyphens, starting with a letter"
            )
        return value

    @field_validator("connection_string")
    @classmethod
    def _connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = dict(
            part.split("=", 1) for part in value.get_secret_value().split(";") if "=" in part
        )
        endpoint = parts.get("Endpoint", "")
        if not endpoint.startswith("sb://") or not (
            ("SharedAccessKeyName" in parts and "SharedAccessKey" in parts)
            or "SharedAccessSignature" in parts
        ):
            raise ValueError(
                "must look like Endpoint=sb://NS.servicebus.windows.net/;"
                "SharedAccessKeyName=NAME;SharedAccessKey=KEY"
            )
        return value

    @model_validator(mode="after")
    def _one_of_each(self) -> AzureServiceBusIntegrationIn:
        if (self.queue_name is None) == (self.topic_name is None):
            raise ValueError("give exactly one of queue_name or topic_name")
        if (self.namespace is None) == (self.connection_string is None):
            raise ValueError("give exactly one of connection_string or namespace")
        return self


class LocalIntegrationIn(StrictModel):
    kind: Literal["local"]


IntegrationIn = Annotated[
    SqsIntegrationIn | AzureServiceBusIntegrationIn | LocalIntegrationIn,
    Field(discriminator="kind"),
]


class IntegrationOut(BaseModel):
    account: str
    kind: Literal["sqs", "azure_service_bus", "local"]
    config: dict[str, object] = Field(description="Non-secret settings as stored.")
    secret_set: bool = Field(description="Whether a write-only secret is stored.")
    fifo: bool
    version: int
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None
    verify_error: str | None
    push_error: str | None = Field(
        description="Why the queue refused the last push as a whole (credentials, rights, a "
        "missing queue, unreachable), in plain words; null once a push goes through again, "
        "a probe succeeds, or the integration is replaced."
    )
    push_error_at: datetime | None = Field(description="When that push was refused.")


class VerifyResult(BaseModel):
    ok: bool
    kind: str
    message_id: str = Field(description="The probe's message id (type `probe`; vendors ignore it).")
    verified_at: datetime | None
    error: str | None = Field(description="The provider's error, in plain words.")
