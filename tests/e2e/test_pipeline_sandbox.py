"""The rule pipeline end to end: the sandbox (R-POL-6). Sandbox messages skip the backlog
and are flagged; their fatigue history is kept apart, within one batch too.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.delivery.engine import DeliveryEngine
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import ANN, BOB, Api, contact, first, tick

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
