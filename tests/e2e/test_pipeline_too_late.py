"""The rule pipeline end to end: no useless sends (issue 22, item 6). A message that would
go out with less than the policy's `min_validity_left` of its token left (now, or at the
window opening it would be deferred to) ends `too_late`, the invite with it; the stats,
the invite list and the preview show it.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock.
"""

from __future__ import annotations

from datetime import timedelta

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ANN,
    BOB,
    CAT,
    EMAIL,
    FRIDAY_10,
    Api,
    contact,
    outcomes,
    recipients,
    tick,
    utc,
    z,
)

REMINDER = [EMAIL, {"channel": "email", "delay": "P1D"}]


async def test_a_reminder_deferred_past_the_cutoff_ends_too_late_at_once(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(FRIDAY_10)
    policy = await api.policy("Short", REMINDER)  # Mon–Fri all day, min_validity_left PT1H
    dispatch = await api.dispatch(policy, validity="P1DT1H")  # valid until Saturday 11:00
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]

    clock.set(z(2026, 3, 7, 10))  # Saturday: the window opens Monday, after the token ends
    await tick(worker)
    assert await api.pull() == []
    invite = await api.invite(dispatch, "ann")
    reminder = invite["messages"][1]
    assert (reminder["state"], reminder["rule"], reminder["reason"]) == (
        "suppressed",
        "too_late",
        "too_late",
    )
    assert utc(reminder["decided_at"]) == z(2026, 3, 7, 10)  # decided now, not deferred
    assert (invite["state"], invite["end_reason"]) == ("ended", "too_late")
    assert invite["contact_erased"] is False  # until the maintenance job runs
    await worker.maintain()
    assert (await api.invite(dispatch, "ann"))["contact_erased"] is True

    stats = await api.stats(dispatch)
    assert stats["reasons"] == {"suppressed": {"too_late": 1}}
    assert stats["invites"] == {"ended": 1, "total": 1}
    listed = await api.call("GET", f"{api.base}/invites", params={"reason": "too_late"})
    assert [i["external_id"] for i in listed] == ["ann"]

    for day in (9, 10):  # nothing more, ever
        clock.set(z(2026, 3, day, 10))
        await tick(worker)
    assert await api.pull() == []


async def test_after_a_long_pause_a_message_with_too_little_left_is_not_sent(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    on = await api.policy("On")
    off = await api.policy("Off", business_rules={"min_validity_left": "PT0S"})
    short = await api.dispatch(on, "q1", "P1D")
    longer = await api.dispatch(on, "q2", "P2D")
    unchecked = await api.dispatch(off, "q3", "P1D")
    for dispatch in (short, longer, unchecked):
        await api.control(f"dispatches/{dispatch['id']}/pause")
    await api.post(short, contact(ANN, "ann"))
    await api.post(longer, contact(BOB, "bob"))
    await api.post(unchecked, contact(CAT, "cat"))
    await tick(worker)
    assert await api.pull() == []

    clock.advance(timedelta(hours=23, minutes=30))  # Tuesday 09:30: 30 minutes left of P1D
    for dispatch in (short, longer, unchecked):
        await api.control(f"dispatches/{dispatch['id']}/resume")
    await tick(worker)
    # Ann's link would die in 30 minutes: not sent. Bob has a day left; Cat's policy has the
    # rule off, so hers goes out as before.
    assert recipients(await api.pull()) == ["bob@example.com", "cat@example.com"]
    assert outcomes(await api.invite(short, "ann")) == [("suppressed", "too_late")]
    assert outcomes(await api.invite(longer, "bob")) == [("sent", None)]
    assert outcomes(await api.invite(unchecked, "cat")) == [("sent", None)]


async def test_a_longer_minimum_takes_effect_at_once_for_waiting_messages(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Edit", REMINDER)
    dispatch = await api.dispatch(policy, validity="P3D")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    # The reminder comes due Tuesday 10:00 with two days left; ask for three.
    await api.patch_policy(policy["id"], {"business_rules": {"min_validity_left": "P2DT1H"}})
    clock.advance(timedelta(days=1))
    await tick(worker)
    assert await api.pull() == []
    assert outcomes(await api.invite(dispatch, "ann")) == [
        ("sent", None),
        ("suppressed", "too_late"),
    ]


async def test_the_preview_shows_too_late_as_the_pipeline_decides_it(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Short", REMINDER)
    body = {"posted_at": FRIDAY_10.isoformat(), "token_validity": "P1DT1H"}
    response = await api.preview(policy["id"], body)
    assert response.status_code == 200, response.text
    first, second = response.json()["messages"]
    assert (first["suppressed"], first["reason"]) == (False, None)
    assert (second["suppressed"], second["reason"]) == (True, "too_late")
    assert utc(second["send_at"]) == z(2026, 3, 9, 0)  # when it would have gone out
    # Without a validity the preview cannot know: as before.
    plain = await api.preview(policy["id"], {"posted_at": FRIDAY_10.isoformat()})
    assert [m["suppressed"] for m in plain.json()["messages"]] == [False, False]
    # Proposed settings: with the rule off, the reminder is deferred to Monday (and would
    # then end token_expired, which the preview shows too).
    proposed = {
        **body,
        "policy": {"lineup": REMINDER, "business_rules": {"min_validity_left": "PT0S"}},
    }
    response = await api.preview(policy["id"], proposed)
    assert response.status_code == 200, response.text
    assert [(m["suppressed"], m["reason"]) for m in response.json()["messages"]] == [
        (False, None),
        (True, "token_expired"),
    ]

    clock.set(FRIDAY_10)
    dispatch = await api.dispatch(policy, validity="P1DT1H")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    clock.set(utc(second["due_at"]))
    await tick(worker)
    assert outcomes(await api.invite(dispatch, "ann")) == [
        ("sent", None),
        ("suppressed", "too_late"),
    ]
