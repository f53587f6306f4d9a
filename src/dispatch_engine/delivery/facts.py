"""Turn a batch's rows into per-message `MessageFacts` for the pure pipeline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from dispatch_engine.models import Invite, LineupMessage, Message, Policy
from dispatch_engine.rules.business_hours import BusinessHours, HolidayCalendar
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.rules.pipeline import DndFacts, MessageFacts
from dispatch_engine.schemas.durations import parse_duration
from dispatch_engine.schemas.policies import BusinessRules, FatigueRules
from dispatch_engine.store.lookups import BatchFacts


@lru_cache(maxsize=1024)
def _hours(
    time_zone: str,
    days_key: tuple[tuple[str, tuple[tuple[str, str], ...]], ...],
    closed_dates: tuple[date, ...] = (),
    holidays: tuple[str, str | None] | None = None,
) -> BusinessHours:
    return BusinessHours.from_spec(
        time_zone,
        {day: list(ranges) for day, ranges in days_key},
        closed_dates=closed_dates,
        holidays=HolidayCalendar(*holidays) if holidays is not None else None,
    )


def business_hours_for(policy: Policy) -> tuple[BusinessHours, bool, timedelta]:
    """The policy's window model (cached), whether the contact's own zone applies, and the
    validity a message must have left to go out (`too_late`). Its closed dates and holiday
    calendar are part of the window model: the planner gets them as pure input."""
    rules = BusinessRules.model_validate(policy.business_rules)
    key = tuple(
        sorted((day, tuple((r.start, r.end) for r in ranges)) for day, ranges in rules.days.items())
    )
    holidays = (
        (rules.holidays.country, rules.holidays.subdivision) if rules.holidays is not None else None
    )
    hours = _hours(rules.time_zone, key, tuple(rules.closed_dates or ()), holidays)
    min_left = timedelta(seconds=parse_duration(rules.min_validity_left))
    return hours, rules.use_contact_time_zone, min_left


def fatigue_of(policy: Policy) -> FatigueRules:
    return FatigueRules.model_validate({**policy.fatigue, "uuid_field": policy.uuid_field})


@dataclass(frozen=True)
class PolicyRules:
    """A policy's parsed rules, built once per policy per batch (not once per message)."""

    fatigue: FatigueRules
    hours: BusinessHours
    contact_zone_applies: bool
    min_validity_left: timedelta

    @classmethod
    def of(cls, policy: Policy) -> PolicyRules:
        hours, contact_zone, min_left = business_hours_for(policy)
        return cls(fatigue_of(policy), hours, contact_zone, min_left)


def contact_zone_for(invite: Invite, rules: PolicyRules) -> str | None:
    """The contact's zone when the policy reads windows (and counts calendar-day delays)
    in it; None for the policy's own zone."""
    return invite.time_zone if rules.contact_zone_applies else None


def rules_for(facts: BatchFacts, policy: Policy) -> PolicyRules:
    rules: PolicyRules | None = facts.rules.get(policy.id)
    if rules is None:
        rules = facts.rules[policy.id] = PolicyRules.of(policy)
    return rules


@dataclass(frozen=True)
class DndSettings:
    max_failures: int = 5
    retry_after: timedelta = timedelta(minutes=1)


def policy_of(facts: BatchFacts, message: Message) -> Policy:
    """The policy that governs a message now: its dispatch's (dispatches can move)."""
    dispatch = facts.dispatches.get(message.dispatch_id)
    return facts.policies[dispatch.policy_id if dispatch else message.policy_id]


def current_step(facts: BatchFacts, message: Message) -> LineupMessage | None:
    step = facts.steps.get(message.lineup_message_id)
    return step if step is not None and step.deleted_at is None else None


def paused_by(facts: BatchFacts, message: Message) -> str | None:
    dispatch = facts.dispatches.get(message.dispatch_id)
    if dispatch is None or dispatch.status != "active" or dispatch.id in facts.paused_dispatches:
        return "dispatch"
    policy = facts.policies.get(dispatch.policy_id)
    if (
        policy is None
        or policy.status != "active"
        or policy.deleted_at is not None
        or policy.id in facts.paused_policies
    ):
        return "policy"
    if message.account_id in facts.paused_accounts:
        return "account"
    if message.channel in facts.paused_channels:
        return "channel"
    return None


@dataclass(frozen=True)
class StepFacts:
    """What every message of one dispatch, lineup step, account and channel shares in a
    batch, worked out once per batch: a batch holds thousands of messages of a few such
    groups, and looking these up message by message was a visible part of deciding."""

    policy: Policy
    rules: PolicyRules
    step: LineupMessage | None  # the live lineup step, None once deleted
    paused_by: str | None
    dnd_configured: bool


def step_facts(facts: BatchFacts, message: Message) -> StepFacts:
    key = (
        message.dispatch_id,
        message.policy_id,
        message.lineup_message_id,
        message.account_id,
        message.channel,
    )
    shared: StepFacts | None = facts.steps_shared.get(key)
    if shared is None:
        policy = policy_of(facts, message)
        shared = facts.steps_shared[key] = StepFacts(
            policy=policy,
            rules=rules_for(facts, policy),
            step=current_step(facts, message),
            paused_by=paused_by(facts, message),
            dnd_configured=bool(policy.dnd_webhooks.get(message.channel)),
        )
    return shared


def rule2_reached(
    facts: BatchFacts,
    invite: Invite,
    policy: Policy,
    rules: FatigueRules,
    now: datetime,
    sent_in_batch: Counter[tuple[str, str | None]],
) -> bool:
    """N invites in D days for this person (this questionnaire or all), across policies.

    Sends of this policy from before its current fatigue epoch no longer count.
    """
    limit = rules.max_invites
    cutoff = now - timedelta(days=limit.days)
    questionnaire = invite.questionnaire_id if limit.scope == "questionnaire" else None
    count = sum(
        1
        for row in facts.ledger.get(invite.uuid_hash, [])
        if row.sent_at > cutoff
        and row.sandbox == invite.sandbox
        and (questionnaire is None or row.questionnaire_id == questionnaire)
        and not (row.policy_id == policy.id and row.fatigue_epoch != policy.fatigue_epoch)
    )
    count += sent_in_batch[(f"{int(invite.sandbox)}:{invite.uuid_hash}", questionnaire)]
    return count >= limit.count


def message_facts(
    facts: BatchFacts,
    message: Message,
    now: datetime,
    *,
    dnd_answer: str | None,
    dnd: DndSettings,
    sent_in_batch: Counter[tuple[str, str | None]],
) -> MessageFacts:
    invite = facts.invites[message.invite_id]
    shared = step_facts(facts, message)
    policy, rules = shared.policy, shared.rules.fatigue
    address_hash = invite.email_hash if message.channel == "email" else invite.mobile_hash
    first_send = invite.first_sent_at is None
    pending_elsewhere = False
    reached = False
    if first_send and rules.pending_token.enabled:
        key = fatigue_lock_key(policy.id, policy.fatigue_epoch, invite.sandbox, invite.uuid_hash)
        holder = facts.lock_holders.get(key)
        pending_elsewhere = holder is not None and holder.id != invite.id and _holds(holder, now)
    if first_send and rules.max_invites.enabled:
        reached = rule2_reached(facts, invite, policy, rules, now, sent_in_batch)
    return MessageFacts(
        now=now,
        channel=message.channel,
        paused_by=shared.paused_by,
        responded=invite.responded_at is not None,
        valid_until=invite.valid_until,
        step_deleted=shared.step is None,
        has_address=address_hash is not None,
        unsubscribed=address_hash is not None
        and (message.account_id, message.channel, address_hash) in facts.unsubscribed,
        first_send=first_send,
        pending_token_elsewhere=pending_elsewhere,
        max_invites_reached=reached,
        business_hours=shared.rules.hours,
        contact_zone=contact_zone_for(invite, shared.rules),
        min_validity_left=shared.rules.min_validity_left,
        dnd=DndFacts(
            configured=shared.dnd_configured,
            answer=dnd_answer,
            failures=message.attempts,
            max_failures=dnd.max_failures,
            retry_after=dnd.retry_after,
        ),
    )


def _holds(holder: Invite, now: datetime) -> bool:
    """A lock only counts while its token is valid and unanswered."""
    return holder.responded_at is None and holder.valid_until > now
