"""A per-integration circuit breaker: one broken account's queue must not slow the others.

After `threshold` consecutive failed pushes the circuit opens for `cooldown`: the relay
leaves that integration's rows for later without calling the queue. The next push after
the cooldown is a trial; success closes the circuit, failure opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class _State:
    failures: int = 0
    open_until: datetime | None = None


class CircuitBreaker:
    def __init__(self, threshold: int = 5, cooldown: timedelta = timedelta(seconds=30)) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._states: dict[str, _State] = {}

    def open_until(self, key: str, now: datetime) -> datetime | None:
        """When the circuit for `key` lets pushes through again, or None if it does now."""
        state = self._states.get(key)
        if state is None or state.open_until is None or state.open_until <= now:
            return None
        return state.open_until

    def record(self, key: str, *, ok: bool, now: datetime) -> None:
        state = self._states.setdefault(key, _State())
        if ok:
            state.failures = 0
            state.open_until = None
            return
        state.failures += 1
        if state.failures >= self.threshold:
            state.open_until = now + self.cooldown
