"""The rule pipeline (R-RUL-1), pure: MessageFacts in, a Decision out. No database."""

from __future__ import annotations

import dataclasses
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch_engine.rules import pipeline
from dispatch_engine.rules.base import Defer, Hold, Pass, Suppress
from dispatch_engine.rules.business_hours import BusinessHours
from dispatch_engine.rules.pipeline import (
    BEFORE_DND,
    RULE_NAMES,
    RULES,
    DndFacts,
    MessageFacts,
    decide,
    needs_dnd_check,
)

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
SATURDAY_10 = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
OFFICE = BusinessHours.from_spec(
    "UTC", {d: [("09:00", "17:00")] for d in ("mon", "tue", "wed", "thu", "fri")}
)


def facts(**overrides: Any) -> MessageFacts:
    """A message every rule lets through (Monday 10:00 UTC, default Mon–Fri all-day hours),
    with `overrides` applied. `dnd` may be given as a dict of DndFacts fields."""
    dnd = overrides.pop("dnd", None)
    values: dict[str, Any] = {
        "now": MONDAY_10,
        "channel": "email",
        "paused_by": None,
        "responded": False,
        "valid_until": MONDAY_10 + timedelta(days=7),
        "step_deleted": False,
        "has_address": True,
        "unsubscribed": False,
        "first_send": True,
        "pending_token_elsewhere": False,
        "max_invites_reached": False,
        "business_hours": BusinessHours.default(),
        "contact_zone": None,
        "dnd": DndFacts(configured=False),
    }
    if isinstance(dnd, dict):
        values["dnd"] = DndFacts(**{"configured": True, **dnd})
    elif dnd is not None:
        values["dnd"] = dnd
    values.update(overrides)
    return MessageFacts(**values)


def failing_rules(f: MessageFacts) -> list[str]:
    return [rule.__name__ for rule in RULES if rule(f) is not None]


# --- the baseline -------------------------------------------------------------------------


def test_baseline_passes_every_rule() -> None:
    f = facts()
    assert failing_rules(f) == []
    assert decide(f) == Pass()
    assert needs_dnd_check(f) is False  # no webhook configured


def test_baseline_with_dnd_allowed_passes_and_needs_a_check() -> None:
    f = facts(dnd={"answer": "allowed"})
    assert decide(f) == Pass()
    assert needs_dnd_check(f) is True


# --- each rule: decision and reason -------------------------------------------------------


@pytest.mark.parametrize("scope", ["dispatch", "policy", "account", "channel"])
def test_paused_holds_with_the_scope_in_the_reason(scope: str) -> None:
    decision = decide(facts(paused_by=scope))
    assert decision == Hold("paused", "paused")
    assert pipeline.paused(facts(paused_by=scope)) == decision
    assert pipeline.paused(facts()) is None


def test_responded_suppresses_and_ends_the_invite() -> None:
    assert decide(facts(responded=True)) == Suppress("responded", "responded", next_step=False)


def test_token_expired_at_and_after_valid_until() -> None:
    expected = Suppress("token_expired", "token_expired", next_step=False)
    assert decide(facts(valid_until=MONDAY_10)) == expected  # exactly at expiry: dead link
    assert decide(facts(valid_until=MONDAY_10 - timedelta(seconds=1))) == expected
    assert decide(facts(valid_until=MONDAY_10 + timedelta(microseconds=1))) == Pass()


def test_step_deleted_suppresses_and_moves_on() -> None:
    assert decide(facts(step_deleted=True)) == Suppress(
        "step_deleted", "step_deleted", next_step=True
    )


@pytest.mark.parametrize(("channel", "reason"), [("email", "no_email"), ("sms", "no_mobile")])
def test_no_address_suppresses_and_moves_on(channel: str, reason: str) -> None:
    assert decide(facts(channel=channel, has_address=False)) == Suppress(
        "no_address", reason, next_step=True
    )


def test_unsubscribed_suppresses_and_moves_on() -> None:
    decision = decide(facts(unsubscribed=True))
    assert decision == Suppress("unsubscribe", "unsubscribed", next_step=True)


def test_fatigue_rule_1_pending_token() -> None:
    assert decide(facts(pending_token_elsewhere=True)) == Suppress(
        "fatigue", "fatigue_pending_token", next_step=False
    )


def test_fatigue_rule_2_max_invites() -> None:
    assert decide(facts(max_invites_reached=True)) == Suppress(
        "fatigue", "fatigue_max_invites", next_step=False
    )


def test_fatigue_applies_only_to_the_first_send() -> None:
    reminder = facts(first_send=False, pending_token_elsewhere=True, max_invites_reached=True)
    assert pipeline.fatigue_pending_token(reminder) is None
    assert pipeline.fatigue_max_invites(reminder) is None
    assert decide(reminder) == Pass()


def test_business_window_defers_to_the_next_opening() -> None:
    decision = decide(facts(now=SATURDAY_10))
    assert decision == Defer(
        "business_window", "deferred_business_hours", datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    )
    early = decide(facts(business_hours=OFFICE, now=MONDAY_10.replace(hour=7)))
    assert early == Defer("business_window", "deferred_business_hours", MONDAY_10.replace(hour=9))
    assert decide(facts(business_hours=OFFICE)) == Pass()


def test_business_window_uses_the_contact_zone_when_given() -> None:
    # 10:00 UTC Monday is 06:00 in New York (EST) and 19:00 in Tokyo.
    ny = decide(facts(business_hours=OFFICE, contact_zone="America/New_York"))
    tokyo = decide(facts(business_hours=OFFICE, contact_zone="Asia/Tokyo"))
    assert ny == Defer("business_window", "deferred_business_hours", MONDAY_10.replace(hour=14))
    assert tokyo == Defer(
        "business_window", "deferred_business_hours", datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
    )
    # An unknown contact zone falls back to the policy's zone.
    assert decide(facts(business_hours=OFFICE, contact_zone="Mars/Olympus")) == Pass()


# --- DND ----------------------------------------------------------------------------------


def test_dnd_not_configured_never_matters() -> None:
    for answer in (None, "dnd", "unavailable", "garbage"):
        f = facts(dnd=DndFacts(configured=False, answer=answer, failures=99))
        assert pipeline.dnd(f) is None
        assert needs_dnd_check(f) is False


def test_dnd_answer_dnd_suppresses_and_moves_on() -> None:
    assert decide(facts(dnd={"answer": "dnd"})) == Suppress("dnd", "dnd", next_step=True)


def test_dnd_allowed_passes() -> None:
    assert pipeline.dnd(facts(dnd={"answer": "allowed"})) is None


def test_dnd_unavailable_defers_with_growing_backoff_then_suppresses() -> None:
    retry = timedelta(minutes=1)
    untils = []
    for failures in range(4):
        decision = decide(
            facts(
                dnd={
                    "answer": "unavailable",
                    "failures": failures,
                    "max_failures": 5,
                    "retry_after": retry,
                }
            )
        )
        assert isinstance(decision, Defer)
        assert (decision.rule, decision.reason) == ("dnd", "dnd_retry")
        untils.append(decision.until)
    assert untils == [MONDAY_10 + retry * 2**n for n in range(4)]
    delays = [u - MONDAY_10 for u in untils]
    assert all(b > a for a, b in itertools.pairwise(delays))
    last = decide(facts(dnd={"answer": "unavailable", "failures": 4, "max_failures": 5}))
    assert last == Suppress("dnd", "dnd_unavailable", next_step=True)
    beyond = decide(facts(dnd={"answer": "unavailable", "failures": 9, "max_failures": 5}))
    assert beyond == Suppress("dnd", "dnd_unavailable", next_step=True)


def test_dnd_max_failures_one_suppresses_at_the_first_failure() -> None:
    decision = decide(facts(dnd={"answer": "unavailable", "failures": 0, "max_failures": 1}))
    assert decision == Suppress("dnd", "dnd_unavailable", next_step=True)


@pytest.mark.parametrize("answer", [None, "", "unavailable", "ALLOWED", "yes", "true", "maybe"])
def test_dnd_unknown_or_missing_answer_never_passes(answer: str | None) -> None:
    decision = decide(facts(dnd={"answer": answer}))
    assert not isinstance(decision, Pass)
    assert isinstance(decision, Defer | Suppress)
    assert decision.rule == "dnd"
    if isinstance(decision, Suppress):
        assert decision.reason in ("dnd", "dnd_unavailable")


# --- order --------------------------------------------------------------------------------


def test_paused_and_responded_holds() -> None:
    assert isinstance(decide(facts(paused_by="dispatch", responded=True)), Hold)


def test_paused_beats_everything() -> None:
    everything = facts(
        paused_by="account",
        responded=True,
        valid_until=MONDAY_10 - timedelta(days=1),
        step_deleted=True,
        has_address=False,
        unsubscribed=True,
        pending_token_elsewhere=True,
        max_invites_reached=True,
        now=SATURDAY_10,
        dnd={"answer": "dnd"},
    )
    assert decide(everything) == Hold("paused", "paused")
    assert needs_dnd_check(everything) is False


def test_responded_before_expired() -> None:
    decision = decide(facts(responded=True, valid_until=MONDAY_10 - timedelta(hours=1)))
    assert isinstance(decision, Suppress)
    assert decision.reason == "responded"


def test_expired_before_step_deleted() -> None:
    decision = decide(facts(valid_until=MONDAY_10, step_deleted=True))
    assert decision == Suppress("token_expired", "token_expired", next_step=False)


def test_step_deleted_before_unsubscribed() -> None:
    decision = decide(facts(step_deleted=True, unsubscribed=True))
    assert isinstance(decision, Suppress)
    assert decision.reason == "step_deleted"


def test_unsubscribed_before_fatigue() -> None:
    decision = decide(facts(unsubscribed=True, pending_token_elsewhere=True))
    assert decision == Suppress("unsubscribe", "unsubscribed", next_step=True)
    decision = decide(facts(unsubscribed=True, max_invites_reached=True))
    assert isinstance(decision, Suppress)
    assert decision.reason == "unsubscribed"


def test_fatigue_rule_1_before_rule_2() -> None:
    decision = decide(facts(pending_token_elsewhere=True, max_invites_reached=True))
    assert isinstance(decision, Suppress)
    assert decision.reason == "fatigue_pending_token"


def test_fatigue_before_business_window() -> None:
    decision = decide(facts(now=SATURDAY_10, max_invites_reached=True))
    assert isinstance(decision, Suppress)
    assert decision.reason == "fatigue_max_invites"


def test_business_window_before_dnd_and_no_dnd_check_when_closed() -> None:
    closed = facts(now=SATURDAY_10, dnd={"answer": None})
    assert needs_dnd_check(closed) is False
    decision = decide(closed)
    assert isinstance(decision, Defer)
    assert decision.rule == "business_window"
    # Even a "dnd" answer loses to the closed window: the message is deferred, not suppressed.
    assert decide(facts(now=SATURDAY_10, dnd={"answer": "dnd"})) == Defer(
        "business_window", "deferred_business_hours", datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "blocker",
    [
        {"paused_by": "policy"},
        {"responded": True},
        {"valid_until": MONDAY_10},
        {"step_deleted": True},
        {"has_address": False},
        {"unsubscribed": True},
        {"pending_token_elsewhere": True},
        {"max_invites_reached": True},
        {"now": SATURDAY_10},
    ],
)
def test_any_earlier_rule_means_no_dnd_check(blocker: dict[str, Any]) -> None:
    assert needs_dnd_check(facts(dnd={"answer": None}, **blocker)) is False
    assert needs_dnd_check(facts(dnd={"answer": None})) is True


def test_rule_names_follow_the_documented_order() -> None:
    doc = pipeline.__doc__ or ""
    documented: list[str] = []
    for first, second in re.findall(
        r"^\s*\d+\.\s+(\w+)(?:\s+\(rule \d\)\s+then\s+(\w+))?", doc, flags=re.MULTILINE
    ):
        documented.append(first)
        if second:
            documented.append(second)
    assert documented == list(RULE_NAMES)
    assert RULE_NAMES[-1] == "dnd"
    assert tuple(BEFORE_DND) == tuple(RULES[:-1])


def test_rule_names_follow_the_spec_order() -> None:
    """SPEC R-RUL-1: paused; responded; token expired; step deleted; unsubscribed;
    fatigue 1 then 2; business window; DND last (no_address is an addition)."""
    spec = [
        "paused",
        "responded",
        "token_expired",
        "step_deleted",
        "unsubscribed",
        "fatigue_pending_token",
        "fatigue_max_invites",
        "business_window",
        "dnd",
    ]
    assert [name for name in RULE_NAMES if name in spec] == spec


# --- property: the first rule that does not pass decides ----------------------------------

INSTANTS = [
    MONDAY_10,
    MONDAY_10.replace(hour=6),
    SATURDAY_10,
    datetime(2026, 3, 8, 23, 59, tzinfo=UTC),  # Sunday night
]

dnd_facts = st.builds(
    DndFacts,
    configured=st.booleans(),
    answer=st.sampled_from([None, "allowed", "dnd", "unavailable", "bogus"]),
    failures=st.integers(min_value=0, max_value=12),
    max_failures=st.integers(min_value=1, max_value=10),
    retry_after=st.sampled_from([timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)]),
)

message_facts = st.builds(
    MessageFacts,
    now=st.sampled_from(INSTANTS),
    channel=st.sampled_from(["email", "sms"]),
    paused_by=st.sampled_from([None, "dispatch", "policy", "account", "channel"]),
    responded=st.booleans(),
    valid_until=st.sampled_from(
        [MONDAY_10 - timedelta(days=1), MONDAY_10, MONDAY_10 + timedelta(days=30)]
    ),
    step_deleted=st.booleans(),
    has_address=st.booleans(),
    unsubscribed=st.booleans(),
    first_send=st.booleans(),
    pending_token_elsewhere=st.booleans(),
    max_invites_reached=st.booleans(),
    business_hours=st.sampled_from([BusinessHours.default(), OFFICE]),
    contact_zone=st.sampled_from([None, "America/New_York", "Asia/Tokyo"]),
    dnd=dnd_facts,
)


@settings(max_examples=400, deadline=None)
@given(message_facts)
def test_decide_passes_iff_every_rule_passes(f: MessageFacts) -> None:
    results = [(rule.__name__, rule(f)) for rule in RULES]
    decision = decide(f)
    assert isinstance(decision, Pass) == all(r is None for _, r in results)
    first = next((r for _, r in results if r is not None), None)
    assert decision == (first if first is not None else Pass())
    # DND is asked exactly when it is configured and every earlier rule passes.
    assert needs_dnd_check(f) == (f.dnd.configured and all(rule(f) is None for rule in BEFORE_DND))
    # Deferrals always point to the future; holds only come from a pause.
    if isinstance(decision, Defer):
        assert decision.until > f.now
    assert isinstance(decision, Hold) == (f.paused_by is not None)
    # Fatigue never touches a reminder.
    if not f.first_send:
        assert getattr(decision, "rule", None) != "fatigue"


@settings(max_examples=100, deadline=None)
@given(message_facts)
def test_decide_is_pure(f: MessageFacts) -> None:
    again = dataclasses.replace(f)
    assert decide(f) == decide(again) == decide(f)
