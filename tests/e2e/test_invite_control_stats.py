"""Controlling invites end to end: counts by outcome (R-INV-4). A dispatch's stats count
invites, messages and reasons.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ANN,
    BOB,
    CAT,
    DAN,
    EMAIL,
    OFFICE_UTC,
    Api,
    contact,
    is_problem,
    outcomes,
    recipients,
    tick,
)

# --- R-INV-4: counts by outcome -----------------------------------------------------------


async def test_stats_count_invites_messages_and_reasons(
    api: Api, worker: Worker, clock: FrozenClock, operator: dict[str, str], backend: dict[str, str]
) -> None:
    policy = await api.policy(
        "Stats",
        [EMAIL, {"channel": "sms", "delay": "PT1H"}, {"channel": "email", "delay": "P1D"}],
        business_rules={**OFFICE_UTC, "use_contact_time_zone": True},
    )
    dispatch = await api.dispatch(policy)
    paused = await api.dispatch(policy, "q2")
    await api.control(f"dispatches/{paused['id']}/pause")
    response = await api.event(
        {"type": "unsubscribe", "channel": "email", "address": BOB["email"]}, backend
    )
    assert response.status_code == 200, response.text
    pause = await api.client.post(
        "/v1/admin/pauses", headers=operator, json={"scope": "channel", "target": "sms"}
    )
    assert pause.status_code == 201, pause.text

    await api.post(
        dispatch,
        contact(ANN, "ann"),
        contact({"email": ANN["email"], "mobile": "+14155550199"}, "ann-again"),  # rule 1
        contact(BOB, "bob"),  # unsubscribed from email
        contact(DAN, "dan", time_zone="Asia/Tokyo"),  # 19:00 in Tokyo: deferred
    )
    await api.post(paused, contact(CAT, "cat"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    clock.advance(timedelta(minutes=30))
    ann = await api.invite(dispatch, "ann")
    response = await api.event({"type": "response", "token": ann["token"]}, backend)
    assert response.json()["messages_stopped"] == 1
    clock.advance(timedelta(minutes=30))  # 11:00: Bob's SMS comes due, SMS is paused
    await tick(worker)
    assert await api.pull() == []

    invites = {ext: await api.invite(dispatch, ext) for ext in ("ann", "ann-again", "bob", "dan")}
    assert outcomes(invites["ann"]) == [("sent", None), ("suppressed", "responded")]
    assert outcomes(invites["ann-again"]) == [("suppressed", "fatigue_pending_token")]
    assert outcomes(invites["bob"]) == [("suppressed", "unsubscribed"), ("held", "paused")]
    assert outcomes(invites["dan"]) == [("deferred", "deferred_business_hours")]

    stats = await api.stats(dispatch)
    assert stats["dispatch"] == dispatch["id"]
    assert stats["invites"] == {"ended": 2, "active": 2, "total": 4}
    assert stats["messages"] == {
        "sent": 1,
        "suppressed": 3,
        "deferred": 1,
        "held": 1,
        "total": 6,
    }
    assert stats["reasons"] == {
        "suppressed": {"responded": 1, "fatigue_pending_token": 1, "unsubscribed": 1},
        "deferred": {"deferred_business_hours": 1},
        "held": {"paused": 1},
    }
    # The counts agree with the invites one by one.
    by_state = Counter(m["state"] for inv in invites.values() for m in inv["messages"])
    assert {**by_state, "total": sum(by_state.values())} == stats["messages"]
    by_invite = Counter(inv["state"] for inv in invites.values())
    assert {**by_invite, "total": len(invites)} == stats["invites"]

    # Per dispatch: the paused one counts only its own.
    assert await api.stats(paused) == {
        "dispatch": paused["id"],
        "invites": {"active": 1, "total": 1},
        "messages": {"held": 1, "total": 1},
        "reasons": {"held": {"paused": 1}},
    }
    missing = await api.client.get(f"{api.base}/dispatches/dsp_nope/stats", headers=api.headers)
    is_problem(missing, 404)
