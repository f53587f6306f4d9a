"""The rule pipeline end to end (R-POL-3..6, R-RUL-1/2, R-SCH-1, R-Q-1).

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
import uvicorn
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.delivery.claims import claim_due_messages, still_owned
from dispatch_engine.delivery.engine import DeliveryEngine
from dispatch_engine.ingest.service import keyed_hash
from dispatch_engine.models import (
    Invite,
    LocalQueueMessage,
    Message,
    OperatorPause,
    OutboxEntry,
    Unsubscribe,
    new_id,
)
from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.schemas.queue_message import SCHEMA_NAME, load_json_schema
from dispatch_engine.security.normalize import normalize_email
from tests.conftest import templates_for
from tests.helpers import (
    ANN,
    BOB,
    FRIDAY_10,
    MONDAY_10,
    Api,
    contact,
    recipients,
    tick,
)

OFFICE_UTC = {
    "time_zone": "UTC",
    "days": {d: [{"start": "09:00", "end": "17:00"}] for d in ("mon", "tue", "wed", "thu", "fri")},
}
NO_RULE_1 = {"pending_token": {"enabled": False}}


# --- fixtures and helpers -----------------------------------------------------------------


def first(invite: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = invite["messages"][0]
    return message


async def outbox_count(context: AppContext, invite_id: str | None = None) -> int:
    query = select(func.count()).select_from(OutboxEntry)
    if invite_id is not None:
        query = query.where(OutboxEntry.invite_id == invite_id)
    async with context.sessions() as session:
        return int((await session.execute(query)).scalar_one())


# --- R-Q-1: the queue message -------------------------------------------------------------


async def test_every_queue_message_matches_the_contract(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy(
        "Three",
        [
            {"channel": "email", "delay": "PT0S"},
            {"channel": "email", "delay": "P1D"},
            {"channel": "sms", "delay": "P1D"},
        ],
    )
    dispatch = await api.dispatch(policy, "nps-q1", "P7D")
    await api.post(
        dispatch,
        contact(ANN, "c-ann", first_name="Ann"),
        contact(BOB, "c-bob", attributes={"tier": "gold"}),
    )
    schema = load_json_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    bodies: list[dict[str, Any]] = []
    for _ in range(3):
        await tick(worker)
        batch = await api.pull()
        assert len(batch) == 2
        bodies.extend(batch)
        clock.advance(timedelta(days=1))
    await tick(worker)
    assert await api.pull() == []  # nothing more, and no duplicates

    invites = {ext: await api.invite(dispatch, ext) for ext in ("c-ann", "c-bob")}
    by_invite = {inv["id"]: inv for inv in invites.values()}
    lineup = {m["id"]: m for m in policy["lineup"]}
    assert len({b["message_id"] for b in bodies}) == 6
    for body in bodies:
        errors = sorted(validator.iter_errors(body), key=str)
        assert errors == [], [e.message for e in errors]
        assert body["schema"] == SCHEMA_NAME == "dispatch-engine.invitation/v1"
        assert body["type"] == "invitation"
        invite = by_invite[body["invite_id"]]
        shown = {m["lineup_message_id"]: m for m in invite["messages"]}
        message = shown[body["lineup_message_id"]]
        assert body["message_id"] == message["id"]
        assert message["state"] == "sent"
        assert body["token"] == invite["token"]
        assert body["message_template"] == dispatch["message_templates"][body["lineup_message_id"]]
        assert body["lineup_position"] == lineup[body["lineup_message_id"]]["position"]
        assert body["channel"] == lineup[body["lineup_message_id"]]["channel"]
        assert body["account"] == "acme"
        assert body["dispatch"] == dispatch["id"]
        assert body["questionnaire"] == "nps-q1"
        assert body["sandbox"] is False
        assert body["resend_of"] is None
        person = ANN if invite["external_id"] == "c-ann" else BOB
        expected = (
            {"email": person["email"]}
            if body["channel"] == "email"
            else {"mobile": person["mobile"]}
        )
        assert body["recipient"] == expected
        wanted_attributes = {"first_name": "Ann"} if person is ANN else {"tier": "gold"}
        assert body["attributes"] == wanted_attributes
    for invite in invites.values():
        assert [m["state"] for m in invite["messages"]] == ["sent", "sent", "sent"]
        assert invite["state"] == "completed"


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
    assert await outbox_count(context, blocked["id"]) == 0

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


# --- R-POL-6: sandbox ---------------------------------------------------------------------


async def _sandbox_dispatch(api: Api, source: dict[str, Any]) -> dict[str, Any]:
    response = await api.client.post(
        f"{api.base}/policies/{source['id']}/copy-to-sandbox", headers=api.headers
    )
    assert response.status_code == 200, response.text
    sandbox = await api.sandbox()
    assert [m["channel"] for m in sandbox["lineup"]] == [m["channel"] for m in source["lineup"]]
    return await api.dispatch(sandbox, "q-sandbox")


async def test_sandbox_messages_skip_the_backlog_and_are_flagged(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Normal")
    normal = await api.dispatch(policy, "q1")
    sandbox = await _sandbox_dispatch(api, policy)
    await api.post(
        normal, *(contact({"email": f"person{i}@example.com"}, f"n{i}") for i in range(20))
    )
    clock.advance(timedelta(minutes=1))  # the sandbox ones come due last
    await api.post(
        sandbox, *(contact({"email": f"tester{i}@example.com"}, f"s{i}") for i in range(3))
    )
    engine = DeliveryEngine(context, batch_size=5)
    result = await engine.run_once()
    assert result.claimed == 5
    assert result.outcomes["sent"] == 5
    await worker.relay_outbox()
    batch = await api.pull()
    assert sorted(b["sandbox"] for b in batch) == [False, False, True, True, True]
    assert sorted(b["recipient"]["email"] for b in batch if b["sandbox"]) == [
        f"tester{i}@example.com" for i in range(3)
    ]
    assert all(b["dispatch"] == sandbox["id"] for b in batch if b["sandbox"])
    for i in range(3):
        invite = await api.invite(sandbox, f"s{i}")
        assert invite["sandbox"] is True
        assert first(invite)["state"] == "sent"
    # The backlog drains afterwards, unflagged.
    await tick(worker)
    rest = await api.pull()
    assert len(rest) == 18
    assert not any(b["sandbox"] for b in rest)


async def test_sandbox_fatigue_history_is_kept_apart(api: Api, worker: Worker) -> None:
    one_ever = {"max_invites": {"enabled": True, "count": 1, "days": 30, "scope": "all"}}
    policy = await api.policy("Real", fatigue=one_ever)
    real = await api.dispatch(policy, "q1")
    real_again = await api.dispatch(policy, "q2")
    sandbox = await _sandbox_dispatch(api, policy)
    assert (await api.sandbox())["fatigue"]["max_invites"]["count"] == 1

    # Real first, then sandbox for the same person: both go out.
    await api.post(real, contact(ANN, "ann-real"))
    await tick(worker)
    await api.post(sandbox, contact(ANN, "ann-sandbox"))
    await tick(worker)
    bodies = await api.pull()
    assert sorted(b["sandbox"] for b in bodies) == [False, True]
    # Sandbox first, then real for another person: both go out.
    await api.post(sandbox, contact(BOB, "bob-sandbox"))
    await tick(worker)
    await api.post(real_again, contact(BOB, "bob-real"))
    await tick(worker)
    bodies = await api.pull()
    assert sorted(b["sandbox"] for b in bodies) == [False, True]
    # Within one history the rule still bites.
    await api.post(sandbox, contact(ANN, "ann-sandbox-2"))
    await api.post(real_again, contact(ANN, "ann-real-2"))
    await tick(worker)
    assert await api.pull() == []
    assert first(await api.invite(sandbox, "ann-sandbox-2"))["rule"] == "fatigue"
    assert first(await api.invite(real_again, "ann-real-2"))["rule"] == "fatigue"


async def test_sandbox_fatigue_is_apart_within_one_batch(api: Api, worker: Worker) -> None:
    one_ever = {"max_invites": {"enabled": True, "count": 1, "days": 30, "scope": "all"}}
    policy = await api.policy("Real", fatigue=one_ever)
    real = await api.dispatch(policy, "q1")
    sandbox = await _sandbox_dispatch(api, policy)
    await api.post(real, contact(ANN, "ann-real"))
    await api.post(sandbox, contact(ANN, "ann-sandbox"))
    await tick(worker)  # both first messages are claimed in the same batch
    real_message = first(await api.invite(real, "ann-real"))
    assert (real_message["state"], real_message["reason"]) == ("sent", None)
    assert sorted(b["sandbox"] for b in await api.pull()) == [False, True]


# --- unsubscribe, pauses, deleted steps ---------------------------------------------------


async def test_unsubscribed_channel_is_skipped_and_the_next_step_goes_out(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy(
        "Mixed", [{"channel": "email", "delay": "PT0S"}, {"channel": "sms", "delay": "PT1H"}]
    )
    dispatch = await api.dispatch(policy)
    async with context.sessions() as session, session.begin():
        session.add(
            Unsubscribe(
                account_id="acme",
                channel="email",
                address_hash=keyed_hash(context.hasher, normalize_email("Ann@Example.com")),
                created_at=clock.now(),
            )
        )
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await tick(worker)
    assert recipients(await api.pull()) == ["bob@example.com"]
    ann = await api.invite(dispatch, "ann")
    assert (first(ann)["state"], first(ann)["reason"]) == ("suppressed", "unsubscribed")
    assert ann["state"] == "active"
    assert ann["messages"][1]["state"] == "pending"
    clock.advance(timedelta(hours=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["+14155552671", "+33612345678"]
    ann = await api.invite(dispatch, "ann")
    assert [m["state"] for m in ann["messages"]] == ["suppressed", "sent"]
    assert ann["state"] == "completed"


async def test_paused_dispatch_and_policy_hold_their_messages(
    api: Api, worker: Worker, context: AppContext
) -> None:
    policy = await api.policy("Shared")
    paused_one = await api.dispatch(policy, "q1")
    running = await api.dispatch(policy, "q2")
    other_policy = await api.policy("Other")
    of_paused_policy = await api.dispatch(other_policy, "q3")
    response = await api.client.post(
        f"{api.base}/dispatches/{paused_one['id']}/pause", headers=api.headers
    )
    assert response.status_code == 200, response.text
    response = await api.client.post(
        f"{api.base}/policies/{other_policy['id']}/pause", headers=api.headers
    )
    assert response.status_code == 200, response.text

    await api.post(paused_one, contact(ANN, "ann"))
    await api.post(running, contact(BOB, "bob"))
    await api.post(of_paused_policy, contact({"email": "cat@example.com"}, "cat"))
    await tick(worker)
    assert recipients(await api.pull()) == ["bob@example.com"]
    held = first(await api.invite(paused_one, "ann"))
    assert (held["state"], held["rule"], held["reason"]) == ("held", "paused", "paused")
    held = first(await api.invite(of_paused_policy, "cat"))
    assert (held["state"], held["reason"]) == ("held", "paused")
    async with context.sessions() as session:
        queued = (await session.execute(select(func.count()).select_from(OutboxEntry))).scalar()
    assert queued == 0  # held messages wrote nothing; Bob's row went once the queue had it


async def test_operator_channel_pause_holds_only_that_channel(
    api: Api, worker: Worker, context: AppContext
) -> None:
    async with context.sessions() as session, session.begin():
        session.add(
            OperatorPause(
                id=new_id("op"),
                scope="channel",
                target="sms",
                reason="vendor outage",
                created_at=context.clock.now(),
            )
        )
    email_policy = await api.policy("Email")
    sms_policy = await api.policy("Sms", [{"channel": "sms", "delay": "PT0S"}])
    email_dispatch = await api.dispatch(email_policy)
    sms_dispatch = await api.dispatch(sms_policy)
    await api.post(email_dispatch, contact(ANN, "ann"))
    await api.post(sms_dispatch, contact(BOB, "bob"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    held = first(await api.invite(sms_dispatch, "bob"))
    assert (held["state"], held["reason"]) == ("held", "paused")


@pytest.mark.parametrize("what", ["dispatches", "policies"])
async def test_held_message_goes_out_after_resume(
    api: Api, worker: Worker, clock: FrozenClock, what: str
) -> None:
    policy = await api.policy("Pausable")
    dispatch = await api.dispatch(policy)
    target = dispatch["id"] if what == "dispatches" else policy["id"]
    response = await api.client.post(f"{api.base}/{what}/{target}/pause", headers=api.headers)
    assert response.status_code == 200, response.text
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert first(await api.invite(dispatch, "ann"))["state"] == "held"
    response = await api.client.post(f"{api.base}/{what}/{target}/resume", headers=api.headers)
    assert response.status_code == 200, response.text
    clock.advance(timedelta(minutes=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]


async def test_deleted_step_is_skipped_and_the_invite_moves_on(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy(
        "Three",
        [
            {"channel": "email", "delay": "PT0S"},
            {"channel": "email", "delay": "P1D"},
            {"channel": "sms", "delay": "P2D"},
        ],
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    step2 = policy["lineup"][1]["id"]
    pending = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (pending["lineup_message_id"], pending["state"]) == (step2, "pending")

    _, etag = await api.get_policy(policy["id"])
    response = await api.client.delete(
        f"{api.base}/policies/{policy['id']}/lineup/{step2}",
        headers={**api.headers, "If-Match": etag},
    )
    assert response.status_code == 200, response.text
    assert [m["channel"] for m in response.json()["lineup"]] == ["email", "sms"]

    clock.advance(timedelta(days=1))  # Tuesday: step 2 comes due
    await tick(worker)
    assert await api.pull() == []
    invite = await api.invite(dispatch, "ann")
    skipped = invite["messages"][1]
    assert (skipped["state"], skipped["rule"], skipped["reason"]) == (
        "suppressed",
        "step_deleted",
        "step_deleted",
    )
    following = invite["messages"][2]
    assert following["lineup_message_id"] == policy["lineup"][2]["id"]
    assert following["state"] == "pending"
    assert following["due_at"] == "2026-03-05T10:00:00Z"  # Tuesday + 2 days
    clock.advance(timedelta(days=2))
    await tick(worker)
    sent = await api.pull()
    assert recipients(sent) == ["+33612345678"]
    assert sent[0]["lineup_position"] == 2
    assert (await api.invite(dispatch, "ann"))["state"] == "completed"


# --- R-POL-5: DND on a real loopback webhook ----------------------------------------------

Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]


@dataclass
class DndServer:
    port: int
    bodies: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[dict[str, Any] | None]:
        with self.lock:
            return [body for p, body in self.bodies if p == path]


def _dnd_app(server: DndServer) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def respond(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        with server.lock:
            server.bodies.append((scope["path"], parsed))
        path = scope["path"]
        try:
            if path == "/yes":
                await respond(send, 200, b'{"dnd": true}')
            elif path == "/no":
                await respond(send, 200, b'{"dnd": false}')
            elif path == "/error":
                await respond(send, 500, b'{"error": "boom"}')
            elif path == "/garbage":
                await respond(send, 200, b"\x00\xff not json at all")
            elif path == "/slow":
                try:
                    async with asyncio.timeout(3):
                        while (await receive())["type"] != "http.disconnect":
                            pass
                except TimeoutError:
                    pass
                await respond(send, 200, b'{"dnd": false}')
            else:
                await respond(send, 404, b"{}")
        except OSError:
            pass

    return app


@pytest.fixture(scope="module")
def dnd_server() -> Iterator[DndServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = DndServer(port=sock.getsockname()[1])
    config = uvicorn.Config(
        _dnd_app(server),
        http="h11",
        loop="asyncio",
        lifespan="off",
        log_level="critical",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not uv.started:
        assert time.monotonic() < deadline, "DND test server did not start"
        time.sleep(0.01)
    try:
        yield server
    finally:
        uv.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture
def dnd(dnd_server: DndServer) -> DndServer:
    with dnd_server.lock:
        dnd_server.bodies.clear()
    return dnd_server


def _dnd_samples(answer: str) -> tuple[float, float]:
    """Loopback webhook calls counted with `answer`, and latencies observed for loopback."""
    calls = REGISTRY.get_sample_value(
        "dispatch_dnd_requests_total", {"host": "127.0.0.1", "answer": answer}
    )
    observed = REGISTRY.get_sample_value(
        "dispatch_dnd_latency_seconds_count", {"host": "127.0.0.1"}
    )
    return calls or 0.0, observed or 0.0


@pytest.mark.parametrize(("path", "outcome"), [("/yes", "dnd"), ("/no", "sent")])
async def test_dnd_answer_decides(
    api: Api, worker: Worker, dnd: DndServer, path: str, outcome: str
) -> None:
    answer = "dnd" if outcome == "dnd" else "allowed"
    before = _dnd_samples(answer)
    policy = await api.policy("Dnd", dnd_webhooks={"email": dnd.url(path)})
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    calls, observed = (after - earlier for after, earlier in zip(_dnd_samples(answer), before))
    assert (calls, observed) == (1, 1)  # one call counted by host and answer, one latency
    if outcome == "dnd":
        assert await api.pull() == []
        assert (message["state"], message["rule"], message["reason"]) == (
            "suppressed",
            "dnd",
            "dnd",
        )
    else:
        assert recipients(await api.pull()) == ["ann@example.com"]
        assert message["state"] == "sent"
    assert dnd.seen(path) == [
        {
            "channel": "email",
            "address": "ann@example.com",
            "account": "acme",
            "policy": policy["id"],
        }
    ]


async def test_dnd_only_asked_for_its_channel_and_inside_the_window(
    api: Api, worker: Worker, clock: FrozenClock, dnd: DndServer
) -> None:
    policy = await api.policy(
        "SmsDnd",
        [{"channel": "email", "delay": "PT0S"}, {"channel": "sms", "delay": "PT1H"}],
        dnd_webhooks={"sms": dnd.url("/yes")},
        business_rules=OFFICE_UTC,
    )
    dispatch = await api.dispatch(policy)
    clock.set(MONDAY_10.replace(hour=16, minute=30))  # the SMS comes due at 17:30: closed
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]  # email: no DND configured
    assert dnd.seen("/yes") == []
    clock.set(MONDAY_10.replace(hour=17, minute=30))
    await tick(worker)
    sms = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (sms["state"], sms["reason"]) == ("deferred", "deferred_business_hours")
    assert dnd.seen("/yes") == []  # a closed window never asks the webhook
    clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    sms = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (sms["state"], sms["reason"]) == ("suppressed", "dnd")
    assert dnd.seen("/yes") == [
        {"channel": "sms", "address": "+33612345678", "account": "acme", "policy": policy["id"]}
    ]


async def test_dnd_uses_the_webhook_of_the_dispatchs_current_policy(
    api: Api, worker: Worker, clock: FrozenClock, dnd: DndServer
) -> None:
    two = [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "PT1H"}]
    old = await api.policy("Old", two)
    new = await api.policy("New", two, dnd_webhooks={"email": dnd.url("/yes")})
    dispatch = await api.dispatch(old)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    response = await api.client.patch(
        f"{api.base}/dispatches/{dispatch['id']}",
        headers=api.headers,
        json={"policy_id": new["id"], "message_templates": templates_for(new)},
    )
    assert response.status_code == 200, response.text
    clock.advance(timedelta(hours=1))
    await tick(worker)
    assert await api.pull() == []
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (reminder["state"], reminder["reason"]) == ("suppressed", "dnd")
    assert [seen and seen["policy"] for seen in dnd.seen("/yes")] == [new["id"]]


@pytest.mark.parametrize("path", ["/error", "/garbage", "/slow"])
async def test_dnd_failure_is_retried_never_sent_then_suppressed(
    api: Api,
    workers: Callable[[], Worker],
    clock: FrozenClock,
    context: AppContext,
    dnd: DndServer,
    path: str,
) -> None:
    context.settings.dnd_max_failures = 3
    context.settings.dnd_retry_seconds = 60
    context.settings.webhook_read_timeout = 0.3
    context.settings.webhook_connect_timeout = 0.3
    worker = workers()
    policy = await api.policy("Broken", dnd_webhooks={"email": dnd.url(path)})
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))

    start = clock.now()
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["state"], message["rule"], message["reason"]) == (
        "deferred",
        "dnd",
        "dnd_retry",
    )
    assert message["attempts"] == 1
    assert message["scheduled_for"] == (start + timedelta(seconds=60)).isoformat().replace(
        "+00:00", "Z"
    )
    asked = len(dnd.seen(path))
    assert asked >= 1
    # Not due again yet: not asked again, not sent.
    clock.advance(timedelta(seconds=59))
    await tick(worker)
    assert len(dnd.seen(path)) == asked
    assert await api.pull() == []

    clock.set(start + timedelta(seconds=60))
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["state"], message["reason"], message["attempts"]) == (
        "deferred",
        "dnd_retry",
        2,
    )
    # The backoff grows: 60 s, then 120 s.
    assert message["scheduled_for"] == (start + timedelta(seconds=180)).isoformat().replace(
        "+00:00", "Z"
    )
    assert await api.pull() == []

    clock.set(start + timedelta(seconds=180))
    await tick(worker)
    invite = await api.invite(dispatch, "ann")
    message = first(invite)
    assert (message["state"], message["rule"], message["reason"]) == (
        "suppressed",
        "dnd",
        "dnd_unavailable",
    )
    assert invite["state"] == "completed"  # the step is skipped; the lineup had one step
    assert await api.pull() == []
    assert await outbox_count(context) == 0
    body = {"channel": "email", "address": "ann@example.com", "account": "acme"}
    assert all(seen == {**body, "policy": policy["id"]} for seen in dnd.seen(path))


# --- R-POL-4: contact time zone -----------------------------------------------------------


async def test_business_window_in_the_contacts_own_time_zone(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Local", business_rules={**OFFICE_UTC, "use_contact_time_zone": True})
    dispatch = await api.dispatch(policy)
    await api.post(
        dispatch,
        contact(ANN, "ny", time_zone="America/New_York"),  # 06:00 local
        contact(BOB, "tokyo", time_zone="Asia/Tokyo"),  # 19:00 local
        contact({"email": "utc@example.com"}, "utc"),  # no zone: the policy's (10:00 UTC)
    )
    await tick(worker)
    assert recipients(await api.pull()) == ["utc@example.com"]
    ny = first(await api.invite(dispatch, "ny"))
    tokyo = first(await api.invite(dispatch, "tokyo"))
    assert (ny["reason"], ny["scheduled_for"]) == (
        "deferred_business_hours",
        "2026-03-02T14:00:00Z",
    )
    assert (tokyo["reason"], tokyo["scheduled_for"]) == (
        "deferred_business_hours",
        "2026-03-03T00:00:00Z",
    )
    clock.set(datetime(2026, 3, 2, 13, 59, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    clock.set(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))  # 09:00 in New York
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    clock.set(datetime(2026, 3, 2, 23, 59, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    clock.set(datetime(2026, 3, 3, 0, 0, tzinfo=UTC))  # 09:00 Tuesday in Tokyo
    await tick(worker)
    assert recipients(await api.pull()) == ["bob@example.com"]


# --- responded, expired -------------------------------------------------------------------


async def test_responded_invite_stops(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy(
        "Three",
        [
            {"channel": "email", "delay": "PT0S"},
            {"channel": "email", "delay": "P1D"},
            {"channel": "sms", "delay": "P1D"},
        ],
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    invite = await api.invite(dispatch, "ann")
    async with context.sessions() as session, session.begin():
        await session.execute(
            update(Invite).where(Invite.id == invite["id"]).values(responded_at=clock.now())
        )
    clock.advance(timedelta(days=1))
    await tick(worker)
    assert await api.pull() == []
    invite = await api.invite(dispatch, "ann")
    assert [(m["state"], m["reason"]) for m in invite["messages"]] == [
        ("sent", None),
        ("suppressed", "responded"),
    ]
    assert invite["messages"][1]["rule"] == "responded"
    assert (invite["state"], invite["end_reason"]) == ("ended", "responded")
    clock.advance(timedelta(days=2))
    await tick(worker)
    assert await api.pull() == []
    assert len((await api.invite(dispatch, "ann"))["messages"]) == 2


async def test_reminder_due_after_token_expiry_is_suppressed(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(FRIDAY_10)
    policy = await api.policy(
        "Short", [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "P1D"}]
    )
    dispatch = await api.dispatch(policy, validity="P1DT1H")  # valid until Saturday 11:00
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    clock.set(datetime(2026, 3, 7, 10, 0, tzinfo=UTC))  # Saturday 10:00: reminder due, closed
    await tick(worker)
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (reminder["state"], reminder["scheduled_for"]) == ("deferred", "2026-03-09T00:00:00Z")
    clock.set(datetime(2026, 3, 9, 0, 0, tzinfo=UTC))  # Monday: the link is dead by now
    await tick(worker)
    assert await api.pull() == []
    invite = await api.invite(dispatch, "ann")
    reminder = invite["messages"][1]
    assert (reminder["state"], reminder["rule"], reminder["reason"]) == (
        "suppressed",
        "token_expired",
        "token_expired",
    )
    assert (invite["state"], invite["end_reason"]) == ("ended", "token_expired")


# --- R-SCH-1: claims and leases -----------------------------------------------------------


async def _message_row(context: AppContext, message_id: str) -> Message:
    async with context.sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None
        return row


async def test_a_claimed_message_waits_for_its_lease(
    api: Api, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Claims")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    message_id = first(await api.invite(dispatch, "ann"))["id"]
    async with context.sessions() as session, session.begin():
        _, ids = await claim_due_messages(
            session, now=clock.now(), limit=10, lease=timedelta(seconds=60)
        )
    assert ids == [message_id]

    engine = DeliveryEngine(context)
    assert (await engine.run_once()).claimed == 0
    clock.advance(timedelta(seconds=59))
    assert (await engine.run_once()).claimed == 0
    assert (await _message_row(context, message_id)).state == "pending"

    clock.advance(timedelta(seconds=2))  # the first claim's lease has expired
    result = await engine.run_once()
    assert (result.claimed, result.outcomes["sent"]) == (1, 1)
    assert (await engine.run_once()).claimed == 0
    assert await outbox_count(context) == 1
    row = await _message_row(context, message_id)
    assert (row.state, row.claim_token, row.lease_until) == ("sent", None, None)


async def test_a_stale_claim_token_writes_nothing(
    api: Api, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Fence")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    lease = timedelta(seconds=60)
    async with context.sessions() as session, session.begin():
        token_a, ids_a = await claim_due_messages(session, now=clock.now(), limit=10, lease=lease)
    assert len(ids_a) == 2
    clock.advance(lease + timedelta(seconds=1))
    async with context.sessions() as session, session.begin():
        token_b, ids_b = await claim_due_messages(session, now=clock.now(), limit=10, lease=lease)
    assert sorted(ids_b) == sorted(ids_a)
    assert token_a != token_b
    async with context.sessions() as session, session.begin():
        assert await still_owned(session, ids_a, token_a) == set()
        assert await still_owned(session, ids_a, token_b) == set(ids_a)

    # The worker holding token A finishes late: its write-back is fenced off.
    engine = DeliveryEngine(context)
    async with context.sessions() as session, session.begin():
        result = await engine._decide_and_write(session, ids_a, token_a, clock.now(), {})
    assert not result.outcomes
    assert await outbox_count(context) == 0
    for message_id in ids_a:
        row = await _message_row(context, message_id)
        assert (row.state, row.claim_token) == ("pending", token_b)

    # The holder of token B writes normally, once.
    async with context.sessions() as session, session.begin():
        result = await engine._decide_and_write(session, ids_b, token_b, clock.now(), {})
    assert result.outcomes["sent"] == 2
    assert await outbox_count(context) == 2
    assert (await engine.run_once()).claimed == 0


# --- R-RUL-2: outbox relay and the local queue --------------------------------------------


async def test_outbox_relay_and_local_queue_visibility(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Relay")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))

    await worker.deliver()
    assert await api.receive() == []  # marked sent and in the outbox, not on the queue yet
    assert await outbox_count(context) == 2
    for ext in ("ann", "bob"):
        assert first(await api.invite(dispatch, ext))["state"] == "sent"

    await worker.relay_outbox()
    await worker.relay_outbox()  # relaying again adds nothing
    async with context.sessions() as session:
        local = (
            await session.execute(select(func.count()).select_from(LocalQueueMessage))
        ).scalar_one()
    # Acknowledged by the queue, so gone from the outbox (no copy of the address stays).
    assert (await outbox_count(context), local) == (0, 2)

    received = await api.receive(visibility=30)
    assert len(received) == 2
    first_count = received[0][
        "receive_count"
    ]  # exact values: see test_local_queue_receive_count_counts_deliveries
    assert {m["message_id"] for m in received} == {m["body"]["message_id"] for m in received}
    clock.advance(timedelta(seconds=29))
    assert await api.receive(visibility=30) == []  # still invisible

    clock.advance(timedelta(seconds=2))  # past the visibility timeout: they come back
    again = await api.receive(visibility=30)
    assert sorted(m["message_id"] for m in again) == sorted(m["message_id"] for m in received)
    assert [m["receive_count"] for m in again] == [first_count + 1] * 2

    stale = [m["receipt"] for m in received]
    result = await api.ack(stale)
    assert result == {"acked": 0, "unknown": stale}
    current = [m["receipt"] for m in again]
    assert await api.ack(current) == {"acked": 2, "unknown": []}
    assert await api.ack(current) == {"acked": 0, "unknown": current}
    clock.advance(timedelta(minutes=5))
    assert await api.receive() == []


class _RefusingSender:
    """The queue refuses some messages: `retry` ones for now, `never` ones for good."""

    def __init__(self, retry: set[str], never: set[str]) -> None:
        self.retry, self.never = retry, never
        self.seen: list[str] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        self.seen.extend(m.message_id for m in messages)
        return [
            SendFailure(m.message_id, "ServiceUnavailable", retryable=m.message_id in self.retry)
            for m in messages
            if m.message_id in self.retry | self.never
        ]

    async def probe(self, body: bytes, message_id: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


async def test_relay_removes_only_what_the_queue_acknowledged(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext, monkeypatch: Any
) -> None:
    policy = await api.policy("Acks")
    dispatch = await api.dispatch(policy)
    cat = {"email": "cat@example.com"}
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"), contact(cat, "cat"))
    await worker.deliver()
    ids = {ext: first(await api.invite(dispatch, ext))["id"] for ext in ("ann", "bob", "cat")}
    sender = _RefusingSender(retry={ids["bob"]}, never={ids["cat"]})

    async def refusing(integration: Any) -> _RefusingSender:
        return sender

    monkeypatch.setattr(worker.senders, "get", refusing)
    await worker.relay.run_once()
    assert sorted(sender.seen) == sorted(ids.values())
    async with context.sessions() as session:
        rows = {
            row.message_id: row for row in (await session.execute(select(OutboxEntry))).scalars()
        }
    assert set(rows) == {ids["bob"], ids["cat"]}  # Ann's row went with the acknowledgement
    retried, gave_up = rows[ids["bob"]], rows[ids["cat"]]
    assert (retried.attempts, retried.failed_at, retried.last_error) == (
        1,
        None,
        "ServiceUnavailable",
    )
    assert retried.next_attempt_at.replace(tzinfo=UTC) >= clock.now()
    assert (gave_up.attempts, gave_up.last_error) == (1, "ServiceUnavailable")
    assert gave_up.failed_at is not None
    assert first(await api.invite(dispatch, "cat"))["state"] == "failed"

    sender.retry.clear()
    clock.advance(timedelta(minutes=10))  # past Bob's backoff
    await worker.relay.run_once()
    assert await outbox_count(context, (await api.invite(dispatch, "bob"))["id"]) == 0
    assert await outbox_count(context) == 1  # Cat's failed row stays, for the operators
    assert sender.seen.count(ids["bob"]) == 2 and sender.seen.count(ids["cat"]) == 1


async def test_local_queue_receive_count_counts_deliveries(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Count")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    counts = []
    for _ in range(2):
        received = await api.receive(visibility=30)
        async with context.sessions() as session:
            stored = (await session.execute(select(LocalQueueMessage.receive_count))).scalar_one()
        counts.append((received[0]["receive_count"], stored))
        clock.advance(timedelta(seconds=31))
    assert counts == [(1, 1), (2, 2)]
