"""The relay's per-integration circuit breaker (pure: no database, no queue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatch_engine.delivery.breaker import CircuitBreaker

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
COOLDOWN = timedelta(seconds=30)


def test_opens_after_threshold_consecutive_failures_for_the_cooldown() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=COOLDOWN)
    for _ in range(2):
        breaker.record("acme:1", ok=False, now=T0)
        assert breaker.open_until("acme:1", T0) is None
    breaker.record("acme:1", ok=False, now=T0)
    assert breaker.open_until("acme:1", T0) == T0 + COOLDOWN
    assert breaker.open_until("acme:1", T0 + COOLDOWN - timedelta(seconds=1)) == T0 + COOLDOWN
    assert breaker.open_until("acme:1", T0 + COOLDOWN) is None  # the trial push may go


def test_a_success_resets_the_count_and_closes_it() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=COOLDOWN)
    breaker.record("acme:1", ok=False, now=T0)
    breaker.record("acme:1", ok=True, now=T0)
    breaker.record("acme:1", ok=False, now=T0)
    assert breaker.open_until("acme:1", T0) is None  # not two in a row
    breaker.record("acme:1", ok=False, now=T0)
    assert breaker.open_until("acme:1", T0) is not None
    breaker.record("acme:1", ok=True, now=T0 + COOLDOWN)
    assert breaker.open_until("acme:1", T0 + COOLDOWN) is None


def test_a_failed_trial_opens_it_again_and_keys_are_independent() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=COOLDOWN)
    breaker.record("acme:1", ok=False, now=T0)
    later = T0 + COOLDOWN
    breaker.record("acme:1", ok=False, now=later)  # the trial failed
    assert breaker.open_until("acme:1", later) == later + COOLDOWN
    assert breaker.open_until("globex:1", later) is None
    assert breaker.open_until("acme:2", later) is None  # a replaced integration starts closed
