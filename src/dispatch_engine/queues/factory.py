"""Chooses and caches one sender per queue integration (closed on shutdown)."""

from __future__ import annotations

from dispatch_engine.context import AppContext
from dispatch_engine.models import QueueIntegration
from dispatch_engine.queues.base import QueueSender
from dispatch_engine.queues.local import LocalQueueSender


class SenderCache:
    """Senders keyed by (account, integration version): an edited integration gets a new one."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self._senders: dict[tuple[str, int], QueueSender] = {}

    async def get(self, integration: QueueIntegration) -> QueueSender | None:
        key = (integration.account_id, integration.version)
        sender = self._senders.get(key)
        if sender is None:
            sender = self._build(integration)
            if sender is None:
                return None
            for old in [k for k in self._senders if k[0] == integration.account_id]:
                await self._senders.pop(old).aclose()
            self._senders[key] = sender
        return sender

    def _build(self, integration: QueueIntegration) -> QueueSender | None:
        if integration.kind == "local":
            return LocalQueueSender(
                self.context.sessions, integration.account_id, self.context.clock
            )
        return None

    async def aclose(self) -> None:
        for sender in self._senders.values():
            await sender.aclose()
        self._senders.clear()
