"""The one lease mechanism (db/leases.py): its backoff and the statements it builds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from dispatch_engine.db import leases
from dispatch_engine.store.local_queue import LOCAL_QUEUE
from dispatch_engine.store.outbox import _PG_DUE_ROWS, OUTBOX

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def test_backoff_is_exponential_with_full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[tuple[float, float]] = []

    def upper(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", upper)
    delays = [leases.backoff(attempt, 2.0, 10.0) for attempt in (1, 2, 3, 4)]
    assert bounds == [(0, 2.0), (0, 4.0), (0, 8.0), (0, 10.0)]
    assert delays == [timedelta(seconds=s) for s in (2.0, 4.0, 8.0, 10.0)]


def test_backoff_draws_below_the_bound() -> None:
    draws = [leases.backoff(3, 1.0, 60.0) for _ in range(200)]
    assert all(timedelta(0) <= d <= timedelta(seconds=4) for d in draws)
    assert len(set(draws)) > 1


def test_backoff_without_jitter_waits_the_bound() -> None:
    assert [leases.backoff(n, 10.0, 600.0, jitter=False).total_seconds() for n in (1, 2, 7, 9)] == [
        10.0,
        20.0,
        600.0,
        600.0,
    ]


def _sql(query: object, dialect: object) -> str:
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]


def test_a_lease_hides_a_row_until_it_ends_and_a_visibility_timeout_until_it_is_reached() -> None:
    outbox = _sql(OUTBOX.unleased(NOW), sqlite.dialect())
    assert (
        outbox == "outbox.lease_until IS NULL OR outbox.lease_until < '2026-03-04 12:00:00.000000'"
    )
    queue = _sql(LOCAL_QUEUE.unleased(NOW), sqlite.dialect())
    assert queue == "local_queue.visible_at <= '2026-03-04 12:00:00.000000'"


def test_the_due_query_locks_with_skip_locked_only_when_asked() -> None:
    locked = leases.due_query(OUTBOX, now=NOW, limit=5, skip_locked=True)
    plain = leases.due_query(OUTBOX, now=NOW, limit=5, skip_locked=False)
    assert _sql(locked, postgresql.dialect()).endswith("FOR UPDATE SKIP LOCKED")
    assert "FOR UPDATE" not in _sql(plain, postgresql.dialect())
    assert "ORDER BY outbox.next_attempt_at, outbox.id" in _sql(plain, postgresql.dialect())


def test_the_relay_fast_path_takes_now_and_limit_as_its_two_parameters() -> None:
    assert "$1" in _PG_DUE_ROWS and "$2" in _PG_DUE_ROWS and "$3" not in _PG_DUE_ROWS
    assert _PG_DUE_ROWS.rstrip().endswith("FOR UPDATE SKIP LOCKED")
