"""Calendar days and closed days end to end (issue 22, items 3 and 4).

Item 3: a delay in days keeps the local wall-clock time in the zone the window is read in,
hours are exact, across both DST changes in New York, Berlin and Sydney: for the first
message (ingest), the next step (delivery), re-timing on a delay edit, and the preview, which
all agree. Item 4: closed dates and a public-holiday calendar defer a message to the next
opening, the preview says which dates were skipped, and a long closure stays bounded.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ALL_DAYS,
    ANN,
    BOB,
    CAT,
    EMAIL,
    Api,
    contact,
    first,
    hours,
    tick,
    utc,
    z,
)

MINUTE = timedelta(minutes=1)

# (zone, change, 16:00 local on the day before the change, 16:00 local the day after it)
DST_CASES = [
    ("America/New_York", "spring", z(2026, 3, 7, 21), z(2026, 3, 8, 20)),
    ("America/New_York", "fall", z(2026, 10, 31, 20), z(2026, 11, 1, 21)),
    ("Europe/Berlin", "spring", z(2026, 3, 28, 15), z(2026, 3, 29, 14)),
    ("Europe/Berlin", "fall", z(2026, 10, 24, 14), z(2026, 10, 25, 15)),
    ("Australia/Sydney", "spring", z(2026, 10, 3, 6), z(2026, 10, 4, 5)),
    ("Australia/Sydney", "fall", z(2026, 4, 4, 5), z(2026, 4, 5, 6)),
]
DST_IDS = [f"{zone}-{change}" for zone, change, _, _ in DST_CASES]


def shown(moment: datetime, zone: str) -> str:
    """How the preview writes an instant: in the zone, with its offset at that instant."""
    return moment.astimezone(ZoneInfo(zone)).isoformat()


async def walk_to(api: Api, worker: Worker, clock: FrozenClock, moment: datetime) -> list[Any]:
    """Nothing goes out a minute before `moment`; what goes out at it."""
    clock.set(moment - MINUTE)
    await tick(worker)
    assert await api.pull() == [], moment
    clock.set(moment)
    await tick(worker)
    return await api.pull()


# --- item 3: calendar-day delays --------------------------------------------------------


@pytest.mark.parametrize(("zone", "change", "base", "next_day"), DST_CASES, ids=DST_IDS)
async def test_a_day_later_is_the_same_local_time_and_24_hours_are_exact(
    api: Api,
    worker: Worker,
    clock: FrozenClock,
    zone: str,
    change: str,
    base: datetime,
    next_day: datetime,
) -> None:
    clock.set(base)
    policy = await api.policy(
        "Calendar",
        [EMAIL, {"channel": "email", "delay": "P1D"}, {"channel": "sms", "delay": "PT24H"}],
        business_rules=hours("00:00", "24:00", zone, ALL_DAYS),
    )
    assert [m["delay"] for m in policy["lineup"]] == ["PT0S", "P1D", "PT24H"]
    preview = (await api.preview(policy["id"], {"posted_at": base.isoformat()})).json()
    dispatch = await api.dispatch(policy, validity="P7D")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1

    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert utc(reminder["due_at"]) == next_day  # 16:00 local, 23 or 25 hours later
    assert next_day - base == timedelta(hours=23 if change == "spring" else 25)
    bodies = await walk_to(api, worker, clock, next_day)
    assert [(b["lineup_position"], utc(b["sent_at"])) for b in bodies] == [(2, next_day)]

    exact = next_day + timedelta(hours=24)  # PT24H: 24 real hours after the reminder
    third = (await api.invite(dispatch, "ann"))["messages"][2]
    assert utc(third["due_at"]) == exact
    bodies = await walk_to(api, worker, clock, exact)
    assert [b["lineup_position"] for b in bodies] == [3]
    assert (await api.invite(dispatch, "ann"))["state"] == "completed"

    # The preview said so beforehand, each time with the offset of its own date.
    messages = preview["messages"]
    assert preview["posted_at"] == shown(base, zone)
    assert [m["due_at"] for m in messages] == [
        shown(base, zone),
        shown(next_day, zone),
        shown(exact, zone),
    ]
    assert messages[0]["due_at"][-6:] != messages[1]["due_at"][-6:]  # the offset changed
    assert messages[1]["due_at"][11:19] == "16:00:00"
    assert [m["delay"] for m in messages] == ["PT0S", "P1D", "PT24H"]
    assert all(m["closed_days"] == [] for m in messages)


async def test_the_first_message_counts_calendar_days_in_each_contacts_zone(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    base = z(2026, 3, 7, 21)  # Saturday 16:00 in New York, 22:00 in Berlin, Sunday 08:00 Sydney
    clock.set(base)
    policy = await api.policy(
        "Local",
        [{"channel": "email", "delay": "P1D"}],
        business_rules={
            **hours("00:00", "24:00", "Europe/Berlin", ALL_DAYS),
            "use_contact_time_zone": True,
        },
    )
    dispatch = await api.dispatch(policy, validity="P7D")
    await api.post(
        dispatch,
        contact(ANN, "ny", time_zone="America/New_York"),
        contact(BOB, "sydney", time_zone="Australia/Sydney"),
        contact(CAT, "berlin"),  # no zone: the policy's
    )
    expected = {
        "ny": z(2026, 3, 8, 20),  # Sunday 16:00 EDT: the clocks sprang forward, 23 h
        "sydney": z(2026, 3, 8, 21),  # Monday 08:00 AEDT: 24 h
        "berlin": z(2026, 3, 8, 21),  # Sunday 22:00 CET: 24 h
    }
    for name, due in expected.items():
        message = first(await api.invite(dispatch, name))
        assert (utc(message["due_at"]), utc(message["scheduled_for"])) == (due, due), name
    for name in ("ny", "sydney"):
        response = await api.preview(
            policy["id"],
            {"posted_at": base.isoformat(), "time_zone": first_zone(name)},
        )
        assert utc(response.json()["messages"][0]["due_at"]) == expected[name]

    # Edited to two days: re-timed from the file's receipt, each in its own zone again.
    edited = await api.patch_step(policy["id"], policy["lineup"][0]["id"], {"delay": "P2D"})
    assert edited["lineup"][0]["delay"] == "P2D"
    assert {n: utc(first(await api.invite(dispatch, n))["due_at"]) for n in expected} == {
        "ny": z(2026, 3, 9, 20),
        "sydney": z(2026, 3, 9, 21),
        "berlin": z(2026, 3, 9, 21),
    }
    # And to 48 exact hours: the same instant for everyone.
    await api.patch_step(policy["id"], policy["lineup"][0]["id"], {"delay": "PT48H"})
    for name in expected:
        assert utc(first(await api.invite(dispatch, name))["due_at"]) == base + timedelta(hours=48)

    bodies = await walk_to(api, worker, clock, base + timedelta(hours=48))
    assert len(bodies) == 3


def first_zone(name: str) -> str:
    return {"ny": "America/New_York", "sydney": "Australia/Sydney"}[name]


async def test_editing_a_delay_retimes_from_when_the_previous_message_went_out(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    friday = z(2026, 3, 6, 21)  # Friday 16:00 EST
    clock.set(friday)
    policy = await api.policy(
        "Retime",
        [EMAIL, {"channel": "email", "delay": "P2D"}],
        business_rules=hours("00:00", "24:00", "America/New_York", ALL_DAYS),
    )
    dispatch = await api.dispatch(policy, validity="P7D")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    step = policy["lineup"][1]["id"]

    def reminder_due(invite: dict[str, Any]) -> datetime:
        return utc(invite["messages"][1]["due_at"])

    assert reminder_due(await api.invite(dispatch, "ann")) == z(2026, 3, 8, 20)  # Sun 16:00 EDT
    clock.set(z(2026, 3, 7, 12))  # the edits come later; the delay still counts from Friday
    await api.patch_step(policy["id"], step, {"delay": "PT48H"})
    assert reminder_due(await api.invite(dispatch, "ann")) == z(2026, 3, 8, 21)  # 17:00 EDT
    await api.patch_step(policy["id"], step, {"delay": "P3D"})
    assert reminder_due(await api.invite(dispatch, "ann")) == z(2026, 3, 9, 20)  # Mon 16:00 EDT
    await api.patch_step(policy["id"], step, {"delay": "P1DT2H"})
    assert reminder_due(await api.invite(dispatch, "ann")) == z(2026, 3, 7, 23)  # Sat 18:00 EST
    bodies = await walk_to(api, worker, clock, z(2026, 3, 7, 23))
    assert [b["lineup_position"] for b in bodies] == [2]


async def test_a_calendar_day_into_a_gap_or_an_overlap(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy(
        "Night",
        [{"channel": "email", "delay": "P1D"}],
        business_rules=hours("00:00", "24:00", "America/New_York", ALL_DAYS),
    )
    dispatch = await api.dispatch(policy, validity="P7D")
    # Saturday 02:30 EST: Sunday has no 02:30, so the first instant after the gap, 03:00 EDT.
    gap_base = z(2026, 3, 7, 7, 30)
    clock.set(gap_base)
    await api.post(dispatch, contact(ANN, "gap"))
    # Saturday 01:30 EDT: Sunday has two 01:30s; the first one (EDT), 24 hours later.
    overlap_base = z(2026, 10, 31, 5, 30)
    clock.set(overlap_base)
    await api.post(dispatch, contact(BOB, "overlap"))
    assert utc(first(await api.invite(dispatch, "gap"))["due_at"]) == z(2026, 3, 8, 7)
    assert utc(first(await api.invite(dispatch, "overlap"))["due_at"]) == z(2026, 11, 1, 5, 30)
    for base, due, local in (
        (gap_base, z(2026, 3, 8, 7), "2026-03-08T03:00:00-04:00"),
        (overlap_base, z(2026, 11, 1, 5, 30), "2026-11-01T01:30:00-04:00"),
    ):
        response = await api.preview(policy["id"], {"posted_at": base.isoformat()})
        assert response.json()["messages"][0]["due_at"] == local
        assert utc(local) == due


# --- item 4: closed dates and holidays --------------------------------------------------

BAVARIAN_OFFICE = {
    **hours("08:00", "17:00", "Europe/Berlin"),
    "holidays": {"country": "DE", "subdivision": "BY"},
    "closed_dates": ["2026-01-07"],
}


async def test_a_message_on_a_closed_day_waits_for_the_next_opening(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    monday_evening = z(2026, 1, 5, 17)  # 18:00 in Berlin
    clock.set(monday_evening)
    policy = await api.policy("Bavaria", business_rules=BAVARIAN_OFFICE)
    dispatch = await api.dispatch(policy, validity="P14D")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert await api.pull() == []
    # Tuesday 6 January is Epiphany in Bavaria, Wednesday a closed date: Thursday 08:00.
    thursday = z(2026, 1, 8, 7)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["state"], message["reason"]) == ("deferred", "deferred_business_hours")
    assert utc(message["scheduled_for"]) == thursday
    for closed_morning in (z(2026, 1, 6, 7), z(2026, 1, 7, 7), z(2026, 1, 7, 12)):
        clock.set(closed_morning)
        await tick(worker)
        assert await api.pull() == []
    bodies = await walk_to(api, worker, clock, thursday)
    assert [utc(b["sent_at"]) for b in bodies] == [thursday]

    response = await api.preview(policy["id"], {"posted_at": monday_evening.isoformat()})
    assert response.status_code == 200, response.text
    previewed = response.json()["messages"][0]
    assert (previewed["send_at"], previewed["reason"]) == (
        "2026-01-08T08:00:00+01:00",
        "deferred_business_hours",
    )
    assert previewed["closed_days"] == [
        {"date": "2026-01-06", "reason": "holiday", "name": "Epiphany"},
        {"date": "2026-01-07", "reason": "closed_date", "name": None},
    ]


async def test_closing_a_day_reschedules_messages_already_deferred_to_it(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(z(2026, 3, 6, 18))  # Friday after hours
    policy = await api.policy("Office", business_rules=hours("09:00", "17:00"))
    dispatch = await api.dispatch(policy, validity="P14D")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert utc(first(await api.invite(dispatch, "ann"))["scheduled_for"]) == z(2026, 3, 9, 9)
    await api.patch_policy(policy["id"], {"business_rules": {"closed_dates": ["2026-03-09"]}})
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["reason"], utc(message["scheduled_for"])) == (
        "deferred_business_hours",
        z(2026, 3, 10, 9),
    )
    assert await walk_to(api, worker, clock, z(2026, 3, 10, 9)) != []


async def test_a_closure_of_almost_a_year_is_waited_out(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    monday = date(2026, 3, 2)
    clock.set(z(2026, 3, 2, 10))
    closed = [str(monday + timedelta(days=n)) for n in range(365)]
    policy = await api.policy(
        "Closed",
        business_rules={
            **hours("00:00", "24:00", days=ALL_DAYS),
            "closed_dates": closed,
            "min_validity_left": "PT0S",  # the closure is the subject here, not too_late
        },
    )
    dispatch = await api.dispatch(policy, validity="P7D")
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["state"], utc(message["scheduled_for"])) == ("deferred", z(2027, 3, 2, 0))
    response = await api.preview(policy["id"], {"posted_at": "2026-03-02T10:00:00Z"})
    skipped = response.json()["messages"][0]["closed_days"]
    assert [d["date"] for d in skipped] == closed
