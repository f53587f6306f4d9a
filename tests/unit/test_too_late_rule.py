"""The `too_late` rule (issue 22, item 6), pure: no message goes out with less than the
policy's `min_validity_left` of its token left, now or at the window opening it would be
deferred to."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch_engine.rules.base import Defer, Pass, Suppress
from dispatch_engine.rules.business_hours import BusinessHours
from dispatch_engine.rules.delays import Delay
from dispatch_engine.rules.pipeline import (
    RULE_NAMES,
    DndFacts,
    MessageFacts,
    decide,
    needs_dnd_check,
    too_late,
)
from dispatch_engine.schemas.policies import BusinessRules
from dispatch_engine.services.preview import preview_lineup
from tests.unit.test_pipeline_rules import facts as pipeline_facts

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FRIDAY_16 = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
OFFICE = BusinessHours.from_spec(
    "UTC", {d: [("09:00", "17:00")] for d in ("mon", "tue", "wed", "thu", "fri")}
)
TOO_LATE = Suppress("too_late", "too_late", next_step=False)


def facts(**overrides: Any) -> MessageFacts:
    """A message every rule lets through (the pipeline tests' builder), its token valid a
    week, in office hours, with the rule on (PT1H)."""
    return pipeline_facts(**{"business_hours": OFFICE, "min_validity_left": HOUR, **overrides})


def test_the_rule_sits_after_fatigue_and_before_the_window() -> None:
    names = list(RULE_NAMES)
    assert names.index("token_expired") < names.index("too_late")
    assert names.index("fatigue_max_invites") < names.index("too_late")
    assert names.index("too_late") + 1 == names.index("business_window")


def test_exactly_the_minimum_left_still_goes_out() -> None:
    assert decide(facts(valid_until=MONDAY_10 + HOUR)) == Pass()


def test_less_than_the_minimum_left_now_is_too_late_and_ends_the_invite() -> None:
    f = facts(valid_until=MONDAY_10 + HOUR - timedelta(seconds=1))
    assert decide(f) == TOO_LATE
    assert needs_dnd_check(dataclasses.replace(f, dnd=DndFacts(configured=True))) is False


def test_a_deferral_past_the_cutoff_is_too_late_now() -> None:
    # Friday 17:30: the window opens Monday 09:00; the token ends Monday 09:30.
    friday_evening = datetime(2026, 3, 6, 17, 30, tzinfo=UTC)
    f = facts(now=friday_evening, valid_until=datetime(2026, 3, 9, 9, 30, tzinfo=UTC))
    assert decide(f) == TOO_LATE
    # With two hours left at the opening it is deferred, as before.
    later = dataclasses.replace(f, valid_until=datetime(2026, 3, 9, 11, 0, tzinfo=UTC))
    assert decide(later) == Defer(
        "business_window", "deferred_business_hours", datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    )


def test_the_deferral_is_read_in_the_contacts_zone() -> None:
    # 10:00 UTC is 05:00 in New York: the opening is 14:00 UTC, the token ends at 14:30.
    f = facts(contact_zone="America/New_York", valid_until=MONDAY_10.replace(hour=14, minute=30))
    assert decide(f) == TOO_LATE
    assert decide(dataclasses.replace(f, contact_zone=None)) == Pass()


def test_zero_turns_the_rule_off() -> None:
    f = facts(min_validity_left=timedelta(0), valid_until=MONDAY_10 + timedelta(seconds=1))
    assert too_late(f) is None
    assert decide(f) == Pass()


def test_earlier_rules_say_more_than_too_late() -> None:
    late = {"valid_until": MONDAY_10 + timedelta(minutes=5)}
    assert decide(facts(**late)) == TOO_LATE
    for blocker, reason in (
        ({"unsubscribed": True}, "unsubscribed"),
        ({"pending_token_elsewhere": True}, "fatigue_pending_token"),
        ({"valid_until": MONDAY_10}, "token_expired"),
    ):
        assert getattr(decide(facts(**{**late, **blocker})), "reason", None) == reason


@settings(max_examples=300, deadline=None)
@given(
    now=st.sampled_from([MONDAY_10, MONDAY_10.replace(hour=6), FRIDAY_16, FRIDAY_16 + 2 * HOUR]),
    left=st.integers(min_value=1, max_value=5 * 24 * 60),
    minimum=st.sampled_from([0, 1, 60, 24 * 60]),
)
def test_nothing_goes_out_or_is_deferred_past_the_cutoff(
    now: datetime, left: int, minimum: int
) -> None:
    f = facts(
        now=now,
        valid_until=now + timedelta(minutes=left),
        min_validity_left=timedelta(minutes=minimum),
    )
    decision = decide(f)
    if isinstance(decision, Pass):
        assert f.valid_until - f.now >= f.min_validity_left
    if isinstance(decision, Defer) and minimum:
        assert f.valid_until - decision.until >= f.min_validity_left
    if decision == TOO_LATE:
        assert minimum > 0


# --- the setting --------------------------------------------------------------------------


def test_the_setting_defaults_to_an_hour_and_is_bounded() -> None:
    assert BusinessRules().min_validity_left == "PT1H"
    assert BusinessRules(min_validity_left="PT0S").min_validity_left == "PT0S"
    assert BusinessRules(min_validity_left="pt90m").min_validity_left == "PT1H30M"
    assert BusinessRules(min_validity_left="P30D").min_validity_left == "P30D"
    for bad in ("P30DT1S", "P1Y", "-PT1H", "soon"):
        with pytest.raises(ValueError):
            BusinessRules(min_validity_left=bad)


# --- the preview walks it as the pipeline does ----------------------------------------------


def test_preview_shows_the_step_too_late_and_stops_there() -> None:
    steps = [("email", Delay()), ("email", Delay(days=1)), ("sms", Delay(days=1))]
    valid_until = datetime(2026, 3, 9, 9, 30, tzinfo=UTC)  # Monday 09:30
    walk = preview_lineup(
        FRIDAY_16, steps, OFFICE, None, valid_until=valid_until, min_validity_left=HOUR
    )
    # Step 2 comes due on Saturday; the window opens Monday 09:00, half an hour before the
    # token ends: too late, and the invite (and the walk) ends there.
    assert [(s.position, s.suppressed, s.reason) for s in walk] == [
        (1, False, None),
        (2, True, "too_late"),
    ]
    assert walk[1].send_at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    # Rule off: step 2 goes out at the opening, step 3 comes due after the token ended.
    without = preview_lineup(FRIDAY_16, steps, OFFICE, None, valid_until=valid_until)
    assert [(s.suppressed, s.reason) for s in without] == [
        (False, None),
        (False, "deferred_business_hours"),
        (True, "token_expired"),
    ]
    # Without a validity, nothing is too late.
    assert [s.suppressed for s in preview_lineup(FRIDAY_16, steps, OFFICE, None)] == [False] * 3
