"""Chooses and caches one sender per queue integration (closed on shutdown)."""

from __future__ import annotations

from dispatch_engine.context import AppContext
from dispatch_engine.models import QueueIntegration
from dispatch_engine.queues.base import QueueSender
from dispatch_engine.queues.local import LocalQueueSender
from dispatch_engine.security.crypto import FieldCipher
from dispatch_engine.security.sealing import integration_secret_aad


def integration_secrets(integration: QueueIntegration, cipher: FieldCipher) -> dict[str, str]:
    """Decrypted secrets, for the queue senders only."""
    if not integration.secret:
        return {}
    aad = integration_secret_aad(integration.account_id)
    data: dict[str, str] = cipher.decrypt_json(integration.secret, aad=aad)
    return data


def build_sender(context: AppContext, integration: QueueIntegration) -> QueueSender | None:
    """A new sender for the integration's kind, with its secrets decrypted."""
    config = integration.config
    if integration.kind == "local":
        return LocalQueueSender(context.sessions, integration.account_id, context.clock)
    secrets = integration_secrets(integration, context.cipher)
    settings = context.settings
    if integration.kind == "sqs":
        from dispatch_engine.queues.sqs import SqsLimits, SqsQueueSender

        return SqsQueueSender(
            queue_url=config["queue_url"],
            region=config["region"],
            fifo=bool(config.get("fifo")),
            endpoint_url=config.get("endpoint_url"),
            access_key_id=config.get("access_key_id"),
            secret_access_key=secrets.get("secret_access_key"),
            limits=SqsLimits(
                max_message_bytes=settings.sqs_max_message_bytes,
                max_batch_bytes=settings.sqs_max_batch_bytes,
                concurrency=settings.sqs_concurrency,
            ),
            url_policy=context.url_policy,
        )
    if integration.kind == "azure_service_bus":
        from dispatch_engine.queues.servicebus import ServiceBusQueueSender

        return ServiceBusQueueSender.from_integration(config, secrets, context.url_policy)
    return None


class SenderCache:
    """Senders keyed by (account, integration version): an edited integration gets a new one."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self._senders: dict[tuple[str, int], QueueSender] = {}

    async def get(self, integration: QueueIntegration) -> QueueSender | None:
        """The integration's sender; the account's senders for older versions are closed.

        The new sender is cached before anything awaits: relay lanes asking at the same
        moment then share it, instead of each building one and the last overwriting (and
        leaking, unclosed) the others'.
        """
        key = (integration.account_id, integration.version)
        sender = self._senders.get(key)
        if sender is None:
            sender = self._build(integration)
            if sender is None:
                return None
            stale = [k for k in self._senders if k[0] == integration.account_id]
            replaced = [self._senders.pop(k) for k in stale]
            self._senders[key] = sender
            for old in replaced:
                await old.aclose()
        return sender

    def _build(self, integration: QueueIntegration) -> QueueSender | None:
        return build_sender(self.context, integration)

    async def aclose(self) -> None:
        for sender in self._senders.values():
            await sender.aclose()
        self._senders.clear()
