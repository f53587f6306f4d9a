"""The rule pipeline end to end: what stops or holds a message. An unsubscribed channel is
skipped, paused dispatches, policies and operator channel pauses hold messages until
resumed, a deleted step is skipped, a responded invite stops and a reminder due after
its token expired is suppressed.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Invite, OperatorPause, OutboxEntry, Unsubscribe, new_id
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.security.hashing import keyed_hash
from dispatch_engine.security.normalize import normalize_email
from tests.helpers import ANN, BOB, FRIDAY_10, Api, contact, first, recipients, tick

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
        "Short",
        [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "P1D"}],
        # too_late off: the deferral past the token's end is what this test is about (with
        # the rule on, the reminder ends `too_late` on Saturday: test_pipeline_too_late.py).
        business_rules={"min_validity_left": "PT0S"},
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
