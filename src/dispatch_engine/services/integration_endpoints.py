"""Where an integration may send, checked when it is stored (the senders check again, with
DNS, when they connect: security/queue_endpoints.py).

* Hosts follow the outgoing-URL rules (``DISPATCH_WEBHOOK_ALLOW_HTTP``,
  ``DISPATCH_WEBHOOK_ALLOWLIST``): an SQS ``endpoint_url``, a Service Bus ``namespace`` and
  the connection string's endpoint. A refusal is a 422 naming the field.
* An SQS ``endpoint_url`` (an SQS-compatible server instead of AWS) is an operator's choice:
  only an ``admin`` key may set or change one. A ``backend`` key may send back the one already
  stored (a PUT replaces everything, secrets included), not another.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatch_engine.errors import Forbidden, ValidationFailed
from dispatch_engine.models import QueueIntegration
from dispatch_engine.schemas.integrations import (
    AzureServiceBusIntegrationIn,
    LocalIntegrationIn,
    SqsIntegrationIn,
)
from dispatch_engine.security.queue_endpoints import (
    check_servicebus_endpoint,
    namespace_endpoint,
    servicebus_endpoint,
)
from dispatch_engine.security.ssrf import UnsafeUrlError, UrlPolicy, validate_url

ENDPOINT_ROLES = ("admin",)

IntegrationBody = SqsIntegrationIn | AzureServiceBusIntegrationIn | LocalIntegrationIn


def check_endpoint_role(
    body: IntegrationBody, existing: QueueIntegration | None, role: str
) -> None:
    """403 when a key that may not choose an SQS endpoint sends a new one."""
    if not isinstance(body, SqsIntegrationIn) or body.endpoint_url is None:
        return
    if role in ENDPOINT_ROLES:
        return
    kept = (
        existing is not None
        and existing.kind == "sqs"
        and existing.config.get("endpoint_url") == body.endpoint_url
    )
    if not kept:
        raise Forbidden(
            f"role '{role}' may not set endpoint_url (an SQS-compatible server is chosen by "
            f"an operator with an {' or '.join(ENDPOINT_ROLES)} key); leave it out to send to "
            "AWS"
        )


def check_endpoints(body: IntegrationBody, policy: UrlPolicy) -> None:
    """422 naming the field when a host breaks the outgoing-URL rules."""
    if isinstance(body, SqsIntegrationIn) and body.endpoint_url is not None:
        _refuse_unsafe("endpoint_url", lambda: validate_url(str(body.endpoint_url), policy))
    if isinstance(body, AzureServiceBusIntegrationIn):
        if body.namespace is not None:
            endpoint = namespace_endpoint(body.namespace)
            _refuse_unsafe("namespace", lambda: check_servicebus_endpoint(endpoint, policy))
        if body.connection_string is not None:
            found = servicebus_endpoint(body.connection_string.get_secret_value())
            if found is None:
                raise ValidationFailed("connection_string", "has no Endpoint")
            # The reason names the host at most, never the key.
            _refuse_unsafe("connection_string", lambda: check_servicebus_endpoint(found, policy))


def _refuse_unsafe(field_name: str, check: Callable[[], object]) -> None:
    try:
        check()
    except UnsafeUrlError as exc:
        raise ValidationFailed(field_name, exc.reason) from None
