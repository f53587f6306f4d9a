"""The embedded local queue's receive and ack bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dispatch_engine.schemas.common import StrictModel


class QueuedMessage(BaseModel):
    receipt: str = Field(description="Pass back to /queue/ack once the message is handled.")
    message_id: str
    receive_count: int
    enqueued_at: datetime
    body: dict[str, Any] = Field(description="The queue message (dispatch-engine.invitation/v1).")


class AckRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"receipts": ["3q2-7wEjxX0Rj5m1W8bYkq9zZ4cVt6Lh"]}]}
    )

    receipts: list[str] = Field(min_length=1, max_length=1000)


class AckResult(BaseModel):
    acked: int
    unknown: list[str] = Field(description="Receipts that were unknown or had expired.")
