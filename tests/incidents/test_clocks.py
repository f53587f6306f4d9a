"""The pure parts: clock arithmetic (boundaries at exactly 15/30 minutes and 48 hours), the
state graph, the resend window rule, notice templates and CSV cell guarding."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from dispatch_engine.incidents import clocks
from dispatch_engine.incidents.notices import render
from dispatch_engine.rules import incident_states as states
from dispatch_engine.security.spreadsheet import csv_line, safe_cell

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)


def facts(**values: object) -> clocks.ClockInputs:
    return clocks.ClockInputs(**{"severity": "P1", "reported_at": T0, **values})  # type: ignore[arg-type]


def test_ack_due_15_minutes_after_reporting_exact_boundary() -> None:
    ack = clocks.ack_clock(facts())
    assert ack.due_at == T0 + 15 * MIN
    assert not ack.overdue(T0 + 15 * MIN)  # exactly at the due time: on time
    assert ack.overdue(T0 + 15 * MIN + SEC)
    assert not ack.overdue(T0 + 14 * MIN)


def test_ack_clock_stops_when_acknowledged() -> None:
    ack = clocks.ack_clock(facts(acknowledged_at=T0 + 20 * MIN))
    assert ack.due_at is None
    assert not ack.overdue(T0 + timedelta(days=1))


def test_update_clock_runs_from_acknowledgement_then_from_each_notice() -> None:
    assert clocks.update_clock(facts()).due_at is None  # not acknowledged yet
    acked = facts(acknowledged_at=T0 + 10 * MIN)
    update = clocks.update_clock(acked)
    assert update.due_at == T0 + 40 * MIN
    assert not update.overdue(T0 + 40 * MIN)
    assert update.overdue(T0 + 40 * MIN + SEC)
    later = clocks.update_clock(facts(acknowledged_at=T0 + 10 * MIN, last_update_at=T0 + 35 * MIN))
    assert later.due_at == T0 + 65 * MIN
    # A notice posted before the acknowledgement does not move the clock back.
    early = clocks.update_clock(facts(acknowledged_at=T0 + 10 * MIN, last_update_at=T0 + 5 * MIN))
    assert early.due_at == T0 + 40 * MIN


def test_update_clock_stops_at_resolution() -> None:
    done = facts(acknowledged_at=T0 + MIN, resolved_at=T0 + 2 * MIN)
    assert clocks.update_clock(done).due_at is None


@pytest.mark.parametrize("severity", ["P1", "P2"])
def test_postmortem_due_48_hours_after_resolution_for_major(severity: str) -> None:
    resolved = T0 + timedelta(hours=3)
    clock = clocks.postmortem_clock(facts(severity=severity, resolved_at=resolved))
    assert clock.due_at == resolved + timedelta(hours=48)
    assert clock.opens_at == resolved + timedelta(hours=24)
    assert not clock.overdue(resolved + timedelta(hours=48))
    assert clock.overdue(resolved + timedelta(hours=48) + SEC)
    recorded = facts(severity=severity, resolved_at=resolved, postmortem_at=resolved + MIN)
    assert clocks.postmortem_clock(recorded).due_at is None


@pytest.mark.parametrize("severity", ["P3", "P4", None])
def test_no_postmortem_clock_for_minor_incidents(severity: str | None) -> None:
    clock = clocks.postmortem_clock(facts(severity=severity, resolved_at=T0))
    assert clock.due_at is None
    assert not clocks.needs_postmortem(severity)


@pytest.mark.parametrize(
    ("minutes", "exceeds"),
    [(59, False), (60, False), (61, True), (60.5, True), (0, False)],
)
def test_resend_window_boundaries(minutes: float, exceeds: bool) -> None:
    scheduled = T0
    assert clocks.window_exceeds(T0 + timedelta(minutes=minutes), scheduled, 60) is exceeds


def test_state_graph() -> None:
    path = list(states.STATES)
    for current, target in itertools.pairwise(path):
        assert states.can_move(current, target)
    assert states.can_move("identified", "investigating")
    for illegal in [
        ("reported", "investigating"),
        ("reported", "resolved"),
        ("acknowledged", "closed"),
        ("resolved", "investigating"),
        ("closed", "reported"),
        ("investigating", "acknowledged"),
    ]:
        assert not states.can_move(*illegal)
    assert states.allowed_from("closed") == ()


def test_notice_templates() -> None:
    eta = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    investigating = render("investigating", "Email delivery", "emails arrive late", None, None, [])
    assert investigating.startswith("Investigating – ")
    assert "emails arrive late." in investigating
    assert "ETA: unknown" in investigating
    identified = render("identified", "Email delivery", "late emails.", eta, "Sorry!", ["Acme"])
    assert identified.startswith("Identified – fix in progress – ")
    assert "ETA: 2026-03-02 12:30 UTC" in identified
    assert identified.endswith("Sorry! Affected accounts: Acme.")
    resolved = render("resolved", "Email delivery", None, None, None, [])
    assert resolved.startswith("Resolved – ") and "resolved" in resolved


@pytest.mark.parametrize("risky", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_never_start_a_formula(risky: str) -> None:
    assert safe_cell(risky) == "'" + risky
    line = csv_line(["ok", risky, 'say "hi", then, go'])
    assert line.endswith("\r\n")
    assert next(csv.reader(io.StringIO(line))) == ["ok", "'" + risky, 'say "hi", then, go']


def test_csv_plain_cells_unchanged() -> None:
    assert safe_cell("m_123") == "m_123"
    assert safe_cell(None) == ""
    assert safe_cell("a=b") == "a=b"
