"""The service probes' answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(
        description="`database` and `migrations`: `ok`, or what is wrong.",
        examples=[{"database": "ok", "migrations": "ok"}],
    )
