"""Controlling invites end to end: the decision trace (issue 22, item 2). Every decision on
a message is recorded with the policy version, rule, reason, time and worker, and the
invite lookup shows it in order; the maintenance job prunes it after the retention.

Everything goes through the HTTP API and the worker's job functions with the injected
frozen clock; the store is called directly only where no API call reaches it yet.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Message, MessageDecision
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ACME,
    ANN,
    BOB,
    EMAIL,
    OFFICE_UTC,
    SATURDAY_10,
    Api,
    contact,
    tick,
    z,
)


async def _trace(api: Api, invite_id: str) -> list[dict[str, Any]]:
    """The decisions of the invite's first message, as the single-invite lookup shows."""
    body = await api.call("GET", f"{ACME}/invites/{invite_id}")
    decisions: list[dict[str, Any]] = body["messages"][0]["decisions"]
    return decisions


def _kinds(trace: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(d["kind"], d["reason"]) for d in trace]


async def test_a_deferral_then_the_send_are_traced_with_the_policy_version(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    clock.set(SATURDAY_10)
    policy = await api.policy("Office", [EMAIL], business_rules=OFFICE_UTC)
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    invite = await api.invite(dispatch, "ann")
    assert "decisions" not in invite["messages"][0]  # the list leaves the trace out

    clock.set(z(2026, 3, 9, 9))  # Monday 09:00: the window opens
    await tick(worker)
    trace = await _trace(api, invite["id"])
    assert _kinds(trace) == [("deferred", "deferred_business_hours"), ("sent", None)]
    deferred, sent = trace
    assert deferred["rule"] == "business_window"
    assert deferred["until"] == "2026-03-09T09:00:00Z"
    assert deferred["at"] == "2026-03-07T10:00:00Z"
    assert sent["at"] == "2026-03-09T09:00:00Z"
    assert sent["until"] is None and sent["rule"] is None
    assert {d["policy_version"] for d in trace} == {policy["version"]}
    assert {d["worker"] for d in trace} == {context.settings.worker_id}

    listed = await api.call(
        "GET", f"{ACME}/invites", params={"dispatch": dispatch["id"], "trace": "true"}
    )
    assert listed[0]["messages"][0]["decisions"] == trace


async def test_held_then_released_then_sent(
    api: Api, worker: Worker, clock: FrozenClock, operator: dict[str, str]
) -> None:
    policy = await api.policy("Paused", [EMAIL])
    dispatch = await api.dispatch(policy)
    await api.control(f"dispatches/{dispatch['id']}/pause", operator)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    clock.advance(timedelta(hours=1))
    await api.control(f"dispatches/{dispatch['id']}/resume", operator)
    clock.advance(timedelta(minutes=1))
    await tick(worker)
    invite = await api.invite(dispatch, "ann")
    trace = await _trace(api, invite["id"])
    assert [d["kind"] for d in trace] == ["held", "released", "sent"]
    held, released, _ = trace
    assert held["rule"] == "paused"
    assert released["reason"] == "resumed" and released["worker"] is None
    assert released["until"] == released["at"]  # looked at again at once
    assert all(d["policy_version"] is not None for d in trace)


async def test_unsubscribe_and_response_suppressions_are_traced(
    api: Api, worker: Worker, clock: FrozenClock, backend: dict[str, str]
) -> None:
    policy = await api.policy("Two", [EMAIL, {"channel": "email", "delay": "P1D"}])
    dispatch = await api.dispatch(policy)
    response = await api.event(
        {"type": "unsubscribe", "channel": "email", "address": BOB["email"]}, backend
    )
    assert response.status_code == 200, response.text
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await tick(worker)
    bob = await api.invite(dispatch, "bob")
    assert _kinds(await _trace(api, bob["id"])) == [("suppressed", "unsubscribed")]

    ann = await api.invite(dispatch, "ann")
    clock.advance(timedelta(hours=1))
    response = await api.event({"type": "response", "token": ann["token"]}, backend)
    assert response.json()["messages_stopped"] == 1
    body = await api.call("GET", f"{ACME}/invites/{ann['id']}")
    first, second = body["messages"]
    assert _kinds(first["decisions"]) == [("sent", None)]
    assert _kinds(second["decisions"]) == [("suppressed", "responded")]
    assert second["decisions"][0]["worker"] is None


async def test_retiming_by_an_edit_is_traced_with_the_version_it_makes(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Retimed", [EMAIL, {"channel": "email", "delay": "P1D"}])
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    ann = await api.invite(dispatch, "ann")
    step = policy["lineup"][1]["id"]
    clock.advance(timedelta(hours=1))
    edited = await api.patch_step(policy["id"], step, {"delay": "P2D"})  # through the API
    body = await api.call("GET", f"{ACME}/invites/{ann['id']}")
    [retimed] = body["messages"][1]["decisions"]
    assert retimed["kind"] == "retimed" and retimed["reason"] == "delay_changed"
    assert retimed["policy_version"] == edited["version"]  # the version the edit made
    assert retimed["until"] == body["messages"][1]["due_at"]


async def test_a_window_change_retimes_its_deferrals(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(SATURDAY_10)
    policy = await api.policy("Office", [EMAIL], business_rules=OFFICE_UTC)
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    edited = await api.patch_policy(
        policy["id"], {"business_rules": {"days": {"sat": [{"start": "08:00", "end": "18:00"}]}}}
    )
    ann = await api.invite(dispatch, "ann")
    trace = await _trace(api, ann["id"])
    assert [d["kind"] for d in trace] == ["deferred", "retimed"]
    assert trace[1]["reason"] == "business_rules_changed"
    assert trace[1]["policy_version"] == edited["version"]


async def test_retention_prunes_old_decisions(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Kept", [EMAIL])
    dispatch = await api.dispatch(policy, validity="P1D")
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await tick(worker)

    async def count() -> int:
        async with context.sessions() as session:
            query = select(func.count()).select_from(MessageDecision)
            return int((await session.execute(query)).scalar_one())

    assert await count() == 2
    context.settings.decision_retention_days = 0  # kept forever
    clock.advance(timedelta(days=400))
    await worker.maintain()
    assert await count() == 2

    context.settings.decision_retention_days = 90
    await worker.maintain()
    assert await count() == 0
    async with context.sessions() as session:  # the messages themselves stay
        assert (await session.execute(select(func.count()).select_from(Message))).scalar_one()


async def test_retention_keeps_recent_decisions(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Recent", [EMAIL])
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    clock.advance(timedelta(days=89))
    await worker.maintain()
    ann = await api.invite(dispatch, "ann")
    assert [d["kind"] for d in await _trace(api, ann["id"])] == ["sent"]


async def test_token_expiry_suppression_is_traced(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext, operator: dict[str, str]
) -> None:
    policy = await api.policy("Expiring", [EMAIL])
    dispatch = await api.dispatch(policy, validity="P1D")
    await api.control(f"dispatches/{dispatch['id']}/pause", operator)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    clock.advance(timedelta(days=2))
    await worker.maintain()
    ann = await api.invite(dispatch, "ann")
    trace = await _trace(api, ann["id"])
    assert _kinds(trace) == [("held", "paused"), ("suppressed", "token_expired")]
    assert trace[1]["worker"] == context.settings.worker_id  # the maintenance job's
    assert trace[1]["policy_version"] == policy["version"]
