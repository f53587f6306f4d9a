"""The one interface every queue kind implements (sqs, azure_service_bus, local)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class OutgoingMessage(NamedTuple):
    """One message to push (a tuple: the relay builds hundreds per round)."""

    message_id: str  # stable: FIFO dedup id, Service Bus message_id, vendor de-duplication
    group_id: str  # the invite id: one invite's messages stay ordered on FIFO queues
    body: bytes


@dataclass(frozen=True)
class SendFailure:
    message_id: str
    error: str  # plain words, never a secret or an address
    retryable: bool
    # The queue refused or could not be reached (credentials, rights, missing queue,
    # outage), as opposed to this message (too large, refused entry): shown on the
    # integration, since it will fail every message until someone acts or it recovers.
    about_queue: bool = False


class QueueSender(Protocol):
    """Pushes messages; returns the ones that failed (all others were acknowledged)."""

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]: ...

    async def probe(self, body: bytes, message_id: str) -> None:
        """Send one probe message (verify); raise with a plain-words reason on failure."""
        ...

    async def aclose(self) -> None: ...
