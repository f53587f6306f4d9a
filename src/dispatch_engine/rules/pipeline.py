"""The rule pipeline (R-RUL-1): pure functions over facts looked up in batches.

Order, and why:
1. paused            — hold, never suppress: a pause must lose nothing.
2. responded         — the person answered; nothing more of this invite goes out.
3. token_expired     — the survey link is dead; sending it would be useless.
4. step_deleted      — the lineup step was deleted; skip to the next step.
5. no_address        — the contact has no address for this message's channel; skip it.
6. unsubscribed      — that address asked for nothing more on this channel.
7. fatigue_pending_token (rule 1) then fatigue_max_invites (rule 2), first message only.
8. too_late          — less than the policy's `min_validity_left` of the token would be
                       left when the message goes out: now, or at the window opening the
                       next rule would defer it to. After the rules that say the message
                       may not go out at all (their reasons say more), before the window,
                       so a deferral that would end past the cutoff is not made.
9. business_window   — outside the policy's hours: defer to the next opening.
10. dnd              — last, "just before sending": the webhook is asked only about
                       messages that would otherwise go out now.
Every rule returns None (pass) or a Decision; the first decision wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from dispatch_engine.rules.base import Decision, Defer, Hold, Pass, Suppress
from dispatch_engine.rules.business_hours import BusinessHours, next_send_time


@dataclass(frozen=True)
class DndFacts:
    configured: bool
    answer: str | None = None  # "allowed" | "dnd" | "unavailable" | None (not asked yet)
    failures: int = 0  # earlier unavailable answers for this message
    max_failures: int = 5
    retry_after: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class MessageFacts:
    """Everything the rules know about one message at decision time."""

    now: datetime
    channel: str
    paused_by: str | None  # "dispatch" | "policy" | "account" | "channel" | None
    responded: bool
    valid_until: datetime
    step_deleted: bool
    has_address: bool
    unsubscribed: bool
    first_send: bool  # the invite has sent nothing yet: fatigue applies
    pending_token_elsewhere: bool  # rule 1: another valid unanswered token of this policy
    max_invites_reached: bool  # rule 2: N invites in D days already
    business_hours: BusinessHours
    contact_zone: str | None  # used when the policy evaluates windows in the contact's zone
    dnd: DndFacts
    # The policy's `min_validity_left`; zero (the default here) turns `too_late` off.
    min_validity_left: timedelta = timedelta(0)


def paused(f: MessageFacts) -> Decision | None:
    """Dispatch, policy, account or channel paused: hold the message (reason `paused`, the
    spec's word, whichever of them holds it)."""
    return Hold("paused", "paused") if f.paused_by else None


def responded(f: MessageFacts) -> Decision | None:
    return Suppress("responded", "responded", next_step=False) if f.responded else None


def token_expired(f: MessageFacts) -> Decision | None:
    if f.now >= f.valid_until:
        return Suppress("token_expired", "token_expired", next_step=False)
    return None


def step_deleted(f: MessageFacts) -> Decision | None:
    return Suppress("step_deleted", "step_deleted", next_step=True) if f.step_deleted else None


def no_address(f: MessageFacts) -> Decision | None:
    if not f.has_address:
        return Suppress("no_address", f"no_{'mobile' if f.channel == 'sms' else 'email'}", True)
    return None


def unsubscribed(f: MessageFacts) -> Decision | None:
    return Suppress("unsubscribe", "unsubscribed", next_step=True) if f.unsubscribed else None


def fatigue_pending_token(f: MessageFacts) -> Decision | None:
    """Rule 1: no new invite while this policy's earlier token is valid and unanswered."""
    if f.first_send and f.pending_token_elsewhere:
        return Suppress("fatigue", "fatigue_pending_token", next_step=False)
    return None


def fatigue_max_invites(f: MessageFacts) -> Decision | None:
    """Rule 2: no new invite after N invites in D days (questionnaire or all)."""
    if f.first_send and f.max_invites_reached:
        return Suppress("fatigue", "fatigue_max_invites", next_step=False)
    return None


@lru_cache(maxsize=4096)
def _window(now: datetime, hours: BusinessHours, zone: str | None) -> tuple[bool, datetime]:
    """Memoised: a batch decides all its messages at one `now`, so each policy's window is
    worked out once per batch rather than once per message (the function is pure)."""
    decision = next_send_time(now, hours, zone)
    return decision.deferred, decision.send_at


def too_late(f: MessageFacts) -> Decision | None:
    """A survey link that dies before the person can answer is a useless send (and a
    confusing one): when less than the policy's `min_validity_left` of the token's validity
    would be left at the moment the message goes out, suppress it, reason `too_late`, and
    end the invite (every later step would come later still). That moment is now, or the
    window opening `business_window` would defer the message to: a deferral that would end
    past the cutoff is not made, the message ends now. Typical after a long pause or a
    weekend rollover. A `min_validity_left` of zero turns the rule off (a deferral past
    the token's end then ends `token_expired` when it comes due, as before the rule)."""
    if not f.min_validity_left:
        return None
    _, send_at = _window(f.now, f.business_hours, f.contact_zone)
    if f.valid_until - send_at < f.min_validity_left:
        return Suppress("too_late", "too_late", next_step=False)
    return None


def business_window(f: MessageFacts) -> Decision | None:
    deferred, send_at = _window(f.now, f.business_hours, f.contact_zone)
    if deferred:
        return Defer("business_window", "deferred_business_hours", send_at)
    return None


def dnd(f: MessageFacts) -> Decision | None:
    """Never 'allowed' on error: an unanswered check is retried, then suppressed."""
    if not f.dnd.configured or f.dnd.answer == "allowed":
        return None
    if f.dnd.answer == "dnd":
        return Suppress("dnd", "dnd", next_step=True)
    if f.dnd.failures + 1 >= f.dnd.max_failures:
        return Suppress("dnd", "dnd_unavailable", next_step=True)
    return Defer("dnd", "dnd_retry", f.now + f.dnd.retry_after * (2**f.dnd.failures))


Rule = Callable[[MessageFacts], Decision | None]

BEFORE_DND: Sequence[Rule] = (
    paused,
    responded,
    token_expired,
    step_deleted,
    no_address,
    unsubscribed,
    fatigue_pending_token,
    fatigue_max_invites,
    too_late,
    business_window,
)
RULES: Sequence[Rule] = (*BEFORE_DND, dnd)
RULE_NAMES: Sequence[str] = tuple(rule.__name__ for rule in RULES)


def decide(facts: MessageFacts, rules: Sequence[Rule] = RULES) -> Decision:
    """The first rule that does not pass decides; a message passes only if all pass."""
    for rule in rules:
        decision = rule(facts)
        if decision is not None:
            return decision
    return Pass()


def needs_dnd_check(facts: MessageFacts) -> bool:
    """True when every rule before DND passes and a DND webhook is configured."""
    return facts.dnd.configured and isinstance(decide(facts, BEFORE_DND), Pass)
