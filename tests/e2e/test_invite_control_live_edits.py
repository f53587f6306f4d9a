"""Controlling invites end to end: live policy edits reach messages not yet sent (R-POL-7).
Delays, deleted steps, business rules, the DND webhook, the UUID field and a step's
channel apply at once to pending, deferred and held messages.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ALL_DAYS,
    ANN,
    BOB,
    EMAIL,
    MONDAY_10,
    SATURDAY_10,
    Api,
    contact,
    hours,
    is_problem,
    outcomes,
    recipients,
    tick,
    utc,
    z,
)

# --- R-POL-7: live edits reach messages not yet sent --------------------------------------


@pytest.mark.parametrize(("new_delay", "days"), [("P1D", 1), ("P3D", 3)])
async def test_editing_a_delay_retimes_pending_messages_at_once(
    api: Api, worker: Worker, clock: FrozenClock, new_delay: str, days: int
) -> None:
    policy = await api.policy("Retime", [EMAIL, {"channel": "email", "delay": "P2D"}])
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    step2 = policy["lineup"][1]["id"]
    assert utc((await api.invite(dispatch, "ann"))["messages"][1]["due_at"]) == z(2026, 3, 4, 10)

    clock.set(z(2026, 3, 2, 12))
    stale = await api.client.patch(
        f"{api.base}/policies/{policy['id']}/lineup/{step2}",
        headers={**api.headers, "If-Match": '"99"'},
        json={"delay": new_delay},
    )
    is_problem(stale, 412)
    edited = await api.patch_step(policy["id"], step2, {"delay": new_delay})
    assert edited["lineup"][1]["delay"] == new_delay
    new_due = MONDAY_10 + timedelta(days=days)
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (reminder["state"], utc(reminder["due_at"]), utc(reminder["scheduled_for"])) == (
        "pending",
        new_due,
        new_due,
    )

    for moment in sorted({z(2026, 3, 4, 10), new_due - timedelta(minutes=1)}):
        if moment < new_due:  # the old due time (when later) and just before the new one
            clock.set(moment)
            await tick(worker)
            assert await api.pull() == [], moment
    clock.set(new_due)
    await tick(worker)
    bodies = await api.pull()
    assert [(b["lineup_position"], b["recipient"]["email"]) for b in bodies] == [
        (2, "ann@example.com")
    ]
    assert utc(bodies[0]["sent_at"]) == new_due
    clock.set(z(2026, 3, 6, 10))
    await tick(worker)
    assert await api.pull() == []  # nothing at the old time either


async def test_deleting_a_step_skips_it_at_once_for_waiting_invites(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy(
        "Three",
        [EMAIL, {"channel": "email", "delay": "P2D"}, {"channel": "sms", "delay": "P1D"}],
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await tick(worker)
    assert len(await api.pull()) == 2
    step2 = policy["lineup"][1]["id"]

    clock.set(z(2026, 3, 2, 11))
    response = await api.client.delete(
        f"{api.base}/policies/{policy['id']}/lineup/{step2}",
        headers={**api.headers, "If-Match": await api.etag(policy["id"])},
    )
    assert response.status_code == 200, response.text
    assert [m["channel"] for m in response.json()["lineup"]] == ["email", "sms"]
    await worker.deliver()  # the next round, long before step 2 would have come due
    for ext in ("ann", "bob"):
        invite = await api.invite(dispatch, ext)
        skipped, following = invite["messages"][1], invite["messages"][2]
        assert (skipped["state"], skipped["rule"], skipped["reason"]) == (
            "suppressed",
            "step_deleted",
            "step_deleted",
        )
        assert utc(skipped["decided_at"]) == clock.now()
        assert following["channel"] == "sms"
        assert following["state"] == "pending"
        assert utc(following["due_at"]) == z(2026, 3, 3, 11)  # a day after the skip
        assert invite["state"] == "active"
    await worker.relay_outbox()
    assert await api.pull() == []

    clock.set(z(2026, 3, 3, 10, 59))
    await tick(worker)
    assert await api.pull() == []
    clock.set(z(2026, 3, 3, 11))
    await tick(worker)
    assert recipients(await api.pull()) == ["+14155552671", "+33612345678"]
    clock.set(z(2026, 3, 4, 10))  # when step 2 was due: nothing more
    await tick(worker)
    assert await api.pull() == []
    ann = await api.invite(dispatch, "ann")
    assert [m["state"] for m in ann["messages"]] == ["sent", "suppressed", "sent"]
    assert ann["state"] == "completed"


@pytest.mark.parametrize(
    ("rules", "goes_out"),
    [
        (hours("00:00", "24:00", days=ALL_DAYS), SATURDAY_10 + timedelta(minutes=30)),
        (hours("12:00", "17:00"), z(2026, 3, 9, 12)),
    ],
    ids=["opened-every-day", "narrowed-to-afternoons"],
)
async def test_changing_business_rules_retimes_already_deferred_messages(
    api: Api, worker: Worker, clock: FrozenClock, rules: dict[str, Any], goes_out: datetime
) -> None:
    clock.set(SATURDAY_10)
    policy = await api.policy("Office", business_rules=hours("08:00", "17:00"))
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert await api.pull() == []
    message = (await api.invite(dispatch, "ann"))["messages"][0]
    assert (message["state"], message["reason"], utc(message["scheduled_for"])) == (
        "deferred",
        "deferred_business_hours",
        z(2026, 3, 9, 8),
    )

    clock.advance(timedelta(minutes=30))
    patched = await api.patch_policy(policy["id"], {"business_rules": {"days": rules["days"]}})
    assert patched["business_rules"]["days"] == rules["days"]
    assert patched["business_rules"]["time_zone"] == "UTC"
    await tick(worker)
    if goes_out == clock.now():
        bodies = await api.pull()
        assert recipients(bodies) == ["ann@example.com"]
        assert utc(bodies[0]["sent_at"]) == goes_out
    else:
        assert await api.pull() == []
        message = (await api.invite(dispatch, "ann"))["messages"][0]
        assert (message["state"], utc(message["scheduled_for"])) == ("deferred", goes_out)
        clock.set(z(2026, 3, 9, 8))  # the old opening: not any more
        await tick(worker)
        assert await api.pull() == []
        clock.set(goes_out)
        await tick(worker)
        assert recipients(await api.pull()) == ["ann@example.com"]
    message = (await api.invite(dispatch, "ann"))["messages"][0]
    assert (message["state"], utc(message["sent_at"])) == ("sent", goes_out)


async def test_changing_the_dnd_webhook_applies_to_the_next_check(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Dnd", [EMAIL, {"channel": "email", "delay": "P1D"}])
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1  # no webhook yet: no check

    unreachable = "http://127.0.0.1:9/"
    patched = await api.patch_policy(policy["id"], {"dnd_webhooks": {"email": unreachable}})
    assert patched["dnd_webhooks"]["email"] is not None
    assert "dnd" in patched["lineup"][1]["checks"]
    clock.advance(timedelta(days=1))
    await tick(worker)
    assert await api.pull() == []
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (reminder["state"], reminder["rule"], reminder["reason"]) == (
        "deferred",
        "dnd",
        "dnd_retry",
    )
    retry_at = utc(reminder["scheduled_for"])
    assert (
        clock.now()
        < retry_at
        <= clock.now() + timedelta(seconds=context.settings.dnd_retry_seconds)
    )

    patched = await api.patch_policy(policy["id"], {"dnd_webhooks": {"email": None}})
    assert patched["dnd_webhooks"].get("email") is None
    assert "dnd" not in patched["lineup"][1]["checks"]
    clock.set(retry_at)
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (reminder["state"], reminder["reason"]) == ("sent", None)


async def test_changing_the_uuid_field_starts_a_new_fatigue_epoch(api: Api, worker: Worker) -> None:
    policy = await api.policy("Fatigue", [EMAIL, {"channel": "email", "delay": "P1D"}])
    dispatches = [await api.dispatch(policy, f"q{n}") for n in range(1, 5)]
    await api.post(dispatches[0], contact(ANN, "ann-1"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    await api.post(dispatches[1], contact(ANN, "ann-2"))
    await tick(worker)
    assert await api.pull() == []
    blocked = await api.invite(dispatches[1], "ann-2")
    assert outcomes(blocked) == [("suppressed", "fatigue_pending_token")]

    patched = await api.patch_policy(policy["id"], {"fatigue": {"uuid_field": "mobile"}})
    assert patched["fatigue"]["uuid_field"] == "mobile"
    await api.post(dispatches[2], contact(ANN, "ann-3"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    assert outcomes(await api.invite(dispatches[2], "ann-3")) == [("sent", None), ("pending", None)]
    # Rule 1 still holds within the new epoch.
    await api.post(dispatches[3], contact(ANN, "ann-4"))
    await tick(worker)
    assert await api.pull() == []
    assert outcomes(await api.invite(dispatches[3], "ann-4")) == [
        ("suppressed", "fatigue_pending_token")
    ]


async def test_editing_a_step_channel_applies_to_its_pending_messages(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Channel", [EMAIL, {"channel": "email", "delay": "P1D"}])
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    edited = await api.patch_step(policy["id"], policy["lineup"][1]["id"], {"channel": "sms"})
    assert edited["lineup"][1]["channel"] == "sms"
    clock.advance(timedelta(days=1))
    await tick(worker)
    bodies = await api.pull()
    assert [(b["channel"], b["recipient"].get("mobile")) for b in bodies] == [
        ("sms", "+33612345678")
    ]


async def test_editing_a_delay_retimes_held_messages_too(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Held", [EMAIL, {"channel": "email", "delay": "P2D"}])
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    await api.control(f"dispatches/{dispatch['id']}/pause")
    clock.set(z(2026, 3, 4, 10))  # Wednesday: step 2 comes due and is held
    await tick(worker)
    assert outcomes(await api.invite(dispatch, "ann"))[1] == ("held", "paused")
    clock.set(z(2026, 3, 4, 11))
    await api.patch_step(policy["id"], policy["lineup"][1]["id"], {"delay": "P3D"})
    await api.control(f"dispatches/{dispatch['id']}/resume")
    clock.set(z(2026, 3, 4, 12))
    await tick(worker)
    assert await api.pull() == []  # now due Thursday 10:00, not yet
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert utc(reminder["due_at"]) == z(2026, 3, 5, 10)
    clock.set(z(2026, 3, 5, 10))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
