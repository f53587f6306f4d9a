"""The rule pipeline end to end: fatigue (R-POL-3).

Rule 1 (a pending token of the same policy) and rule 2 (max invites across policies,
per questionnaire scope), a new UUID field resetting the history, racing rounds, and
reminders never blocked.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.delivery.engine import DeliveryEngine
from dispatch_engine.models import Invite, Unsubscribe
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.security.hashing import keyed_hash
from dispatch_engine.security.normalize import normalize_email
from tests.helpers import ANN, BOB, MONDAY_10, Api, contact, first, outbox_rows, recipients, tick

NO_RULE_1 = {"pending_token": {"enabled": False}}


# --- R-POL-3: fatigue ---------------------------------------------------------------------


async def test_fatigue_rule_1_pending_token_of_the_same_policy(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("P")
    other = await api.policy("Other")
    first_file = await api.dispatch(policy, "q1", "P1D")
    second_file = await api.dispatch(policy, "q2", "P1D")
    other_policy = await api.dispatch(other, "q1", "P1D")

    await api.post(first_file, contact(ANN, "ann-1"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]

    # Same policy, token still valid and unanswered: no new invite.
    await api.post(second_file, contact(ANN, "ann-2"))
    await tick(worker)
    assert await api.pull() == []
    blocked = await api.invite(second_file, "ann-2")
    assert first(blocked)["state"] == "suppressed"
    assert first(blocked)["rule"] == "fatigue"
    assert first(blocked)["reason"] == "fatigue_pending_token"
    assert blocked["state"] == "ended"
    assert blocked["first_sent_at"] is None
    assert await outbox_rows(context, blocked["id"]) == 0

    # Another policy does not count.
    await api.post(other_policy, contact(ANN, "ann-3"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    assert first(await api.invite(other_policy, "ann-3"))["state"] == "sent"

    # Once the first token has expired, a new file for that person goes out.
    clock.set(MONDAY_10 + timedelta(days=1, minutes=1))
    await api.post(second_file, contact(ANN, "ann-4"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    assert first(await api.invite(second_file, "ann-4"))["state"] == "sent"


async def test_fatigue_rule_1_answered_token_frees_the_person(
    api: Api, worker: Worker, context: AppContext
) -> None:
    policy = await api.policy("P")
    one = await api.dispatch(policy, "q1")
    two = await api.dispatch(policy, "q2")
    await api.post(one, contact(ANN, "ann-1"))
    await tick(worker)
    assert len(await api.pull()) == 1
    answered = await api.invite(one, "ann-1")
    async with context.sessions() as session, session.begin():
        await session.execute(
            update(Invite)
            .where(Invite.id == answered["id"])
            .values(responded_at=context.clock.now())
        )
    await api.post(two, contact(ANN, "ann-2"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]


async def test_fatigue_rule_1_an_invite_that_sent_nothing_holds_no_lock(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    """Every step skipped (here: unsubscribed) ends the lineup without a send: no token
    reached the person, so nothing of theirs is pending and rule 1 must not block them."""
    policy = await api.policy("P")
    one = await api.dispatch(policy, "q1")
    two = await api.dispatch(policy, "q2")
    unsubscribe = Unsubscribe(
        account_id="acme",
        channel="email",
        address_hash=keyed_hash(context.hasher, normalize_email(ANN["email"])),
        created_at=clock.now(),
    )
    async with context.sessions() as session, session.begin():
        session.add(unsubscribe)
    await api.post(one, contact(ANN, "ann-1"))
    await tick(worker)
    skipped = await api.invite(one, "ann-1")
    assert (first(skipped)["state"], first(skipped)["reason"]) == ("suppressed", "unsubscribed")
    assert skipped["state"] == "completed" and skipped["first_sent_at"] is None

    async with context.sessions() as session, session.begin():  # Ann may be written to again
        await session.delete(await session.merge(unsubscribe))
    await api.post(two, contact(ANN, "ann-2"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    assert first(await api.invite(two, "ann-2"))["state"] == "sent"


async def test_changing_the_uuid_field_resets_fatigue_history(api: Api, worker: Worker) -> None:
    policy = await api.policy("Epochs")
    one = await api.dispatch(policy, "q1")
    two = await api.dispatch(policy, "q2")
    await api.post(one, contact(ANN, "ann-1"))
    await tick(worker)
    assert len(await api.pull()) == 1
    for field_name in ("mobile", "email"):  # away and back: a new epoch each time
        _, etag = await api.get_policy(policy["id"])
        response = await api.client.patch(
            f"{api.base}/policies/{policy['id']}",
            headers={**api.headers, "If-Match": etag},
            json={"fatigue": {"uuid_field": field_name}},
        )
        assert response.status_code == 200, response.text
    await api.post(two, contact(ANN, "ann-2"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]


@pytest.mark.parametrize("how", ["expired", "responded"])
async def test_fatigue_rule_1_holder_gone_before_the_blocked_invite_comes_due(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext, how: str
) -> None:
    """B is posted while A's token is valid (so B gets no lock at ingest) but comes due
    after A's token expired / was answered: B may go out then (ingest/service.py docstring:
    "unless the holder's token has expired or been answered by then")."""
    policy = await api.policy("Later", [{"channel": "email", "delay": "PT2H"}])
    short = await api.dispatch(policy, "q1", "PT3H")
    long = await api.dispatch(policy, "q2", "P1D")
    await api.post(short, contact(ANN, "ann-a"))  # A: due 12:00, valid until 13:00
    clock.set(MONDAY_10.replace(hour=12))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    clock.set(MONDAY_10.replace(hour=12, minute=30))
    await api.post(long, contact(ANN, "ann-b"))  # B: due 14:30
    holder = await api.invite(short, "ann-a")
    if how == "responded":
        async with context.sessions() as session, session.begin():
            await session.execute(
                update(Invite).where(Invite.id == holder["id"]).values(responded_at=clock.now())
            )
    clock.set(MONDAY_10.replace(hour=14, minute=30))  # A's token expired at 13:00
    try:
        await tick(worker)
    finally:
        blocked = first(await api.invite(long, "ann-b"))
    assert (blocked["state"], blocked["reason"]) == ("sent", None)
    assert recipients(await api.pull()) == ["ann@example.com"]


async def test_fatigue_rule_2_max_invites_across_policies(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    all_scope = {
        **NO_RULE_1,
        "max_invites": {"enabled": True, "count": 2, "days": 30, "scope": "all"},
    }
    p1 = await api.policy("P1", fatigue=all_scope)
    p2 = await api.policy("P2", fatigue=all_scope)
    d1 = await api.dispatch(p1, "q1")
    d2 = await api.dispatch(p2, "q2")
    d3 = await api.dispatch(p1, "q3")

    await api.post(d1, contact(ANN, "ann-1"))
    await tick(worker)
    await api.post(d2, contact(ANN, "ann-2"))
    await tick(worker)
    assert len(await api.pull()) == 2
    await api.post(d3, contact(ANN, "ann-3"))
    await tick(worker)
    assert await api.pull() == []
    blocked = await api.invite(d3, "ann-3")
    assert (first(blocked)["state"], first(blocked)["rule"], first(blocked)["reason"]) == (
        "suppressed",
        "fatigue",
        "fatigue_max_invites",
    )
    assert blocked["state"] == "ended"

    # 29 days later the two sends still count...
    clock.set(MONDAY_10 + timedelta(days=29))
    await api.post(d3, contact(ANN, "ann-4"))
    await tick(worker)
    assert await api.pull() == []
    assert first(await api.invite(d3, "ann-4"))["reason"] == "fatigue_max_invites"
    # ...31 days later they no longer do.
    clock.set(MONDAY_10 + timedelta(days=31))  # a Thursday
    await api.post(d3, contact(ANN, "ann-5"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    assert first(await api.invite(d3, "ann-5"))["state"] == "sent"


async def test_fatigue_rule_2_holds_when_rounds_race(api: Api, context: AppContext) -> None:
    """Rounds running at once (one per message) must not all see an empty ledger: the
    person's first sends are serialised, so a limit of 1 lets exactly one invite out."""
    one_in_30 = {**NO_RULE_1, "max_invites": {"enabled": True, "count": 1, "days": 30}}
    racers = 6
    for n in range(racers):
        policy = await api.policy(
            f"P{n}",
            fatigue={**one_in_30, "max_invites": {**one_in_30["max_invites"], "scope": "all"}},
        )
        await api.post(await api.dispatch(policy, f"q{n}"), contact(ANN, f"ann-{n}"))
    engine = DeliveryEngine(context, batch_size=1)
    result = await engine.run_until_idle(concurrency=racers)
    assert result.claimed >= racers
    assert result.outcomes["sent"] == 1, result.outcomes
    assert result.outcomes["fatigue_max_invites"] == racers - 1


async def test_fatigue_rule_2_questionnaire_scope_counts_only_that_questionnaire(
    api: Api, worker: Worker
) -> None:
    p_any = await api.policy("Any", fatigue=NO_RULE_1)
    scoped = await api.policy(
        "Scoped",
        fatigue={
            **NO_RULE_1,
            "max_invites": {"enabled": True, "count": 2, "days": 30, "scope": "questionnaire"},
        },
    )
    elsewhere_q1 = await api.dispatch(p_any, "q1")
    elsewhere_q2 = await api.dispatch(p_any, "q2")
    scoped_q1 = await api.dispatch(scoped, "q1")
    scoped_q2 = await api.dispatch(scoped, "q2")
    scoped_q1_again = await api.dispatch(scoped, "q1")

    for dispatch, ext in ((elsewhere_q1, "a1"), (elsewhere_q2, "a2"), (elsewhere_q2, "a3")):
        await api.post(dispatch, contact(ANN, ext))
        await tick(worker)
    assert len(await api.pull()) == 3  # q1 once, q2 twice (another policy, no rule 2)

    await api.post(scoped_q1, contact(ANN, "s1"))  # q1 seen once: goes out
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    await api.post(scoped_q2, contact(ANN, "s2"))  # q2 seen twice: blocked
    await tick(worker)
    assert await api.pull() == []
    assert first(await api.invite(scoped_q2, "s2"))["reason"] == "fatigue_max_invites"
    await api.post(scoped_q1_again, contact(ANN, "s3"))  # q1 now seen twice: blocked
    await tick(worker)
    assert await api.pull() == []
    assert first(await api.invite(scoped_q1_again, "s3"))["reason"] == "fatigue_max_invites"


async def test_reminders_are_never_fatigue_blocked(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    tight = {**NO_RULE_1, "max_invites": {"enabled": True, "count": 1, "days": 30, "scope": "all"}}
    policy = await api.policy(
        "Tight",
        [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "PT1H"}],
        fatigue=tight,
    )
    plain = await api.policy(
        "Plain", [{"channel": "email", "delay": "PT0S"}, {"channel": "sms", "delay": "PT2H"}]
    )
    tight_dispatch = await api.dispatch(policy, "q1")
    plain_dispatch = await api.dispatch(plain, "q2")
    await api.post(tight_dispatch, contact(ANN, "ann-1"))
    await api.post(plain_dispatch, contact(BOB, "bob-1"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com", "bob@example.com"]
    clock.advance(timedelta(hours=1))
    await tick(worker)  # ann's reminder: her count is reached, but it is her own invite
    assert recipients(await api.pull()) == ["ann@example.com"]
    clock.advance(timedelta(hours=1))
    await tick(worker)  # bob's reminder: his own rule-1 token is pending, still not blocked
    assert recipients(await api.pull()) == ["+14155552671"]
    ann = await api.invite(tight_dispatch, "ann-1")
    bob = await api.invite(plain_dispatch, "bob-1")
    assert [m["state"] for m in ann["messages"]] == ["sent", "sent"]
    assert [m["state"] for m in bob["messages"]] == ["sent", "sent"]
