"""Controlling invites end to end: events, expiry and erasure, counts, live policy edits,
pauses and the policy preview (R-INV-3/4/5, R-POL-7/8, R-DSP-1, R-RUL-3).

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.delivery.contacts import open_contact
from dispatch_engine.models import Base, Invite, OutboxEntry, Unsubscribe
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import report_incident
from tests.helpers import (
    ANN,
    BOB,
    FRIDAY_10,
    MONDAY_10,
    Api,
    contact,
    is_problem,
    recipients,
    tick,
)

SATURDAY_10 = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
CAT = {"email": "cat@example.com", "mobile": "+447911123456"}
DAN = {"email": "dan@example.com", "mobile": "+16502530000"}
EMAIL = {"channel": "email", "delay": "PT0S"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ALL_DAYS = (*WEEKDAYS, "sat", "sun")


def hours(
    start: str, end: str, zone: str = "UTC", days: tuple[str, ...] = WEEKDAYS
) -> dict[str, Any]:
    return {"time_zone": zone, "days": {d: [{"start": start, "end": end}] for d in days}}


OFFICE_UTC = hours("09:00", "17:00")
BERLIN_HOURS = hours("08:00", "17:00", "Europe/Berlin")
PREVIEW_LINEUP = [
    {"channel": "email", "delay": "PT0S"},
    {"channel": "email", "delay": "PT2H"},
    {"channel": "sms", "delay": "P1D"},
]
POSTED_AT = "2026-03-06T16:30:00+01:00"  # Friday 16:30 in Berlin (CET)


def utc(text_value: str) -> datetime:
    return datetime.fromisoformat(text_value).astimezone(UTC)


def z(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- fixtures and helpers -----------------------------------------------------------------


def outcomes(invite: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(m["state"], m["reason"]) for m in invite["messages"]]


async def outbox_rows(context: AppContext, *invite_ids: str) -> int:
    query = select(func.count()).select_from(OutboxEntry)
    if invite_ids:
        query = query.where(OutboxEntry.invite_id.in_(invite_ids))
    async with context.sessions() as session:
        return int((await session.execute(query)).scalar_one())


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def raw_scan(context: AppContext) -> str:
    """Every value of every row of every table, as text (`SELECT *`, no ORM)."""
    chunks: list[str] = []
    async with context.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(text(f'SELECT * FROM "{table.name}"'))
            for row in rows.all():
                chunks.extend(_as_text(value) for value in row)
    return "\n".join(chunks)


async def row_counts(context: AppContext) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with context.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            result = await connection.execute(text(f'SELECT COUNT(*) FROM "{table.name}"'))
            counts[table.name] = int(result.scalar_one())
    return counts


# --- R-INV-3: events ----------------------------------------------------------------------

THREE_STEPS = [
    {"channel": "email", "delay": "PT0S"},
    {"channel": "email", "delay": "P1D"},
    {"channel": "sms", "delay": "P1D"},
]


async def test_response_stops_every_further_message_and_replay_is_harmless(
    api: Api, worker: Worker, clock: FrozenClock, backend: dict[str, str]
) -> None:
    policy = await api.policy("Three", THREE_STEPS)
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com", "bob@example.com"]
    ann = await api.invite(dispatch, "ann")

    clock.advance(timedelta(hours=3))
    response = await api.event({"type": "response", "token": ann["token"]}, backend)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "type": "response",
        "applied": True,
        "invite": ann["id"],
        "messages_stopped": 1,
        "channels": [],
    }
    ann = await api.invite(dispatch, "ann")
    assert (ann["state"], ann["end_reason"]) == ("ended", "responded")
    assert utc(ann["responded_at"]) == clock.now()
    assert outcomes(ann) == [("sent", None), ("suppressed", "responded")]
    assert ann["messages"][1]["rule"] == "responded"

    clock.advance(timedelta(hours=1))
    replay = await api.event({"type": "response", "token": ann["token"]}, backend)
    assert replay.status_code == 200, replay.text
    assert replay.json() == {
        "type": "response",
        "applied": False,
        "invite": ann["id"],
        "messages_stopped": 0,
        "channels": [],
    }
    again = await api.invite(dispatch, "ann")
    assert again["responded_at"] == ann["responded_at"]  # the first answer stands

    later: list[dict[str, Any]] = []
    for _ in range(4):  # the rest of the lineup, and some: Bob only
        clock.advance(timedelta(days=1))
        await tick(worker)
        await worker.maintain()
        later += await api.pull()
    assert recipients(later) == ["+14155552671", "bob@example.com"]
    ann = await api.invite(dispatch, "ann")
    assert outcomes(ann) == [("sent", None), ("suppressed", "responded")]
    assert (await api.invite(dispatch, "bob"))["state"] == "completed"


async def test_response_with_an_unknown_or_foreign_token_is_404(
    api: Api, globex: Api, worker: Worker
) -> None:
    policy = await api.policy("One")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    token = (await api.invite(dispatch, "ann"))["token"]
    unknown = await api.event({"type": "response", "token": "no-such-token"})
    assert "token" in is_problem(unknown, 404)["detail"]
    # Another account cannot answer for acme's invite.
    foreign = await globex.event({"type": "response", "token": token})
    is_problem(foreign, 404)
    foreign = await globex.event({"type": "unsubscribe", "token": token, "channel": "email"})
    is_problem(foreign, 404)
    await tick(worker)
    ann = await api.invite(dispatch, "ann")
    assert ann["responded_at"] is None
    assert outcomes(ann) == [("sent", None)]


async def test_invite_lookup_tells_an_unknown_account_or_dispatch_from_no_match(
    api: Api, admin: dict[str, str]
) -> None:
    policy = await api.policy("One")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    token = (await api.invite(dispatch, "ann"))["token"]
    client = api.client

    async def lookup(account: str, **params: str) -> httpx.Response:
        return await client.get(f"/v1/accounts/{account}/invites", headers=admin, params=params)

    assert "account 'nope'" in is_problem(await lookup("nope", token=token), 404)["detail"]
    missing = await lookup("acme", external_id="ann", dispatch="dsp_nope")
    assert "dispatch 'dsp_nope'" in is_problem(missing, 404)["detail"]
    assert (await lookup("acme", token="no-such-token")).json() == []
    assert [i["token"] for i in (await lookup("acme", token=token)).json()] == [token]


async def test_unsubscribe_by_address_blocks_that_channel_for_the_account_only(
    api: Api,
    globex: Api,
    worker: Worker,
    clock: FrozenClock,
    context: AppContext,
    backend: dict[str, str],
) -> None:
    policy = await api.policy("Three", THREE_STEPS)
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    other_policy = await globex.policy("G", THREE_STEPS[:2])
    other = await globex.dispatch(other_policy)
    await globex.post(other, contact(ANN, "ann"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com", "bob@example.com"]
    assert recipients(await globex.pull()) == ["ann@example.com"]

    body = {"type": "unsubscribe", "channel": "email", "address": "Ann@Example.com"}
    response = await api.event(body, backend)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "type": "unsubscribe",
        "applied": True,
        "invite": None,
        "messages_stopped": 0,
        "channels": ["email"],
    }
    replay = await api.event({**body, "address": " ann@example.COM "}, backend)
    assert replay.status_code == 200, replay.text
    assert replay.json()["applied"] is False
    async with context.sessions() as session:
        stored = list((await session.execute(select(Unsubscribe))).scalars())
    assert stored and all("@" not in row.address_hash for row in stored)  # a keyed hash

    # Tuesday: Ann's already scheduled email reminder is suppressed, Bob's goes out, and
    # globex (another account) still writes to Ann.
    clock.advance(timedelta(days=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["bob@example.com"]
    assert recipients(await globex.pull()) == ["ann@example.com"]
    ann = await api.invite(dispatch, "ann")
    reminder = ann["messages"][1]
    assert (reminder["state"], reminder["rule"], reminder["reason"]) == (
        "suppressed",
        "unsubscribe",
        "unsubscribed",
    )
    assert ann["state"] == "active"
    assert (ann["messages"][2]["channel"], ann["messages"][2]["state"]) == ("sms", "pending")

    # Wednesday: the SMS step still goes out to both.
    clock.advance(timedelta(days=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["+14155552671", "+33612345678"]
    ann = await api.invite(dispatch, "ann")
    assert [m["state"] for m in ann["messages"]] == ["sent", "suppressed", "sent"]
    assert ann["state"] == "completed"

    # From then on: a new invite of another policy gets no email either.
    later_policy = await api.policy("Later", [EMAIL, {"channel": "sms", "delay": "PT1H"}])
    later = await api.dispatch(later_policy, "q2")
    await api.post(later, contact(ANN, "ann-2"))
    await tick(worker)
    assert await api.pull() == []
    first = (await api.invite(later, "ann-2"))["messages"][0]
    assert (first["state"], first["reason"]) == ("suppressed", "unsubscribed")


async def test_unsubscribe_by_token_and_channel(
    api: Api, worker: Worker, clock: FrozenClock, backend: dict[str, str]
) -> None:
    policy = await api.policy(
        "Mixed", [EMAIL, {"channel": "sms", "delay": "PT1H"}, {"channel": "email", "delay": "P1D"}]
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await tick(worker)
    assert len(await api.pull()) == 2
    ann = await api.invite(dispatch, "ann")

    response = await api.event(
        {"type": "unsubscribe", "token": ann["token"], "channel": "sms"}, backend
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "type": "unsubscribe",
        "applied": True,
        "invite": ann["id"],
        "messages_stopped": 0,
        "channels": ["sms"],
    }
    # The same address in another spelling is already blocked.
    replay = await api.event(
        {"type": "unsubscribe", "channel": "sms", "address": "+33 6 12 34 56 78"}, backend
    )
    assert replay.status_code == 200, replay.text
    assert replay.json()["applied"] is False

    clock.advance(timedelta(hours=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["+14155552671"]
    ann = await api.invite(dispatch, "ann")
    assert outcomes(ann) == [("sent", None), ("suppressed", "unsubscribed"), ("pending", None)]

    clock.advance(timedelta(days=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com", "bob@example.com"]
    assert (await api.invite(dispatch, "ann"))["state"] == "completed"

    # The block is the address's, not the invite's: an SMS-only invite elsewhere is skipped.
    sms_policy = await api.policy("Sms", [{"channel": "sms", "delay": "PT0S"}])
    sms_dispatch = await api.dispatch(sms_policy, "q2")
    await api.post(sms_dispatch, contact(ANN, "ann-sms"), contact(BOB, "bob-sms"))
    await tick(worker)
    assert recipients(await api.pull()) == ["+14155552671"]
    skipped = (await api.invite(sms_dispatch, "ann-sms"))["messages"][0]
    assert (skipped["state"], skipped["reason"]) == ("suppressed", "unsubscribed")


async def test_malformed_events_are_422_problems_without_the_address(
    api: Api, context: AppContext, backend: dict[str, str]
) -> None:
    policy = await api.policy("One")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    token = (await api.invite(dispatch, "ann"))["token"]
    bad_email = "ann.private@@example.com"
    response = await api.event(
        {"type": "unsubscribe", "channel": "email", "address": bad_email}, backend
    )
    body = is_problem(response, 422)
    assert body["field"] == "address"
    assert "ann.private" not in response.text

    response = await api.event(
        {"type": "unsubscribe", "channel": "sms", "address": "+999 123 4567"}, backend
    )
    is_problem(response, 422)
    assert "999" not in response.text

    response = await api.event(
        {"type": "unsubscribe", "address": "secret.person@example.com"}, backend
    )
    body = is_problem(response, 422)
    assert body["field"] == "channel"
    assert "secret.person" not in response.text

    response = await api.event({"type": "unsubscribe", "channel": "email"}, backend)
    assert is_problem(response, 422)["field"] == "address"
    response = await api.event({"type": "response"}, backend)
    assert is_problem(response, 422)["field"] == "token"
    response = await api.event({"type": "unsubscribe", "token": token, "channel": "fax"}, backend)
    is_problem(response, 422)
    assert token not in response.text

    response = await api.event(
        {"type": "unsubscribe", "channel": "fax", "address": "ann@example.com"}, backend
    )
    is_problem(response, 422)
    assert "ann@example.com" not in response.text

    is_problem(await api.event({"type": "unsubscribe", "channel": "email"}, backend), 422)
    is_problem(await api.event({"type": "response"}, backend), 422)
    is_problem(await api.event({"type": "bounce", "token": token}, backend), 422)

    async with context.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Unsubscribe))).scalar() == 0


async def test_operator_resubscribe_lets_later_messages_go_out_and_is_audited(
    api: Api,
    worker: Worker,
    clock: FrozenClock,
    operator: dict[str, str],
    backend: dict[str, str],
) -> None:
    policy = await api.policy(
        "Three emails",
        [EMAIL, {"channel": "email", "delay": "P1D"}, {"channel": "email", "delay": "P1D"}],
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    response = await api.event(
        {"type": "unsubscribe", "channel": "email", "address": "ann@example.com"}, backend
    )
    assert response.status_code == 200, response.text
    clock.advance(timedelta(days=1))
    await tick(worker)
    assert await api.pull() == []
    assert outcomes(await api.invite(dispatch, "ann"))[1] == ("suppressed", "unsubscribed")

    target = f"{api.base}/unsubscribes"
    body = {"channel": "email", "address": "ANN@example.com"}
    forbidden = await api.client.request("DELETE", target, headers=backend, json=body)
    is_problem(forbidden, 403)
    resubscribed = await api.client.request("DELETE", target, headers=operator, json=body)
    assert resubscribed.status_code == 200, resubscribed.text
    assert resubscribed.json()["applied"] is True
    clock.advance(timedelta(minutes=1))
    again = await api.client.request("DELETE", target, headers=operator, json=body)
    assert again.status_code == 200, again.text
    assert again.json()["applied"] is False

    audit = await api.client.get(
        "/v1/admin/audit", headers=operator, params={"action": "unsubscribe.delete"}
    )
    assert audit.status_code == 200, audit.text
    items = audit.json()["items"]
    assert len(items) == 2  # both operator calls; the refused backend call changed nothing
    assert {(i["role"], i["account"], i["target_type"]) for i in items} == {
        ("operator", "acme", "unsubscribe")
    }
    assert [i["after"]["removed"] for i in items] == [False, True]  # newest first
    assert "ann@example.com" not in audit.text.lower()

    clock.advance(timedelta(days=1))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    ann = await api.invite(dispatch, "ann")
    assert [m["state"] for m in ann["messages"]] == ["sent", "suppressed", "sent"]


# --- R-INV-5: expiry and erasure ----------------------------------------------------------


async def test_token_expiry_ends_waiting_messages(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(FRIDAY_10)
    policy = await api.policy("Short", [EMAIL, {"channel": "email", "delay": "P1D"}])
    running = await api.dispatch(policy, "q1", "P1DT1H")  # valid until Saturday 11:00
    paused = await api.dispatch(policy, "q2", "P1DT1H")
    await api.control(f"dispatches/{paused['id']}/pause")
    await api.post(running, contact(ANN, "ann"))
    await api.post(paused, contact(BOB, "bob"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]

    clock.set(z(2026, 3, 7, 10))  # Saturday: Ann's reminder is due, the window is closed
    await tick(worker)
    await worker.maintain()
    assert outcomes(await api.invite(running, "ann"))[1] == ("deferred", "deferred_business_hours")
    assert outcomes(await api.invite(paused, "bob")) == [("held", "paused")]

    clock.set(z(2026, 3, 7, 10, 59))
    await worker.maintain()
    assert (await api.invite(running, "ann"))["state"] == "active"

    clock.set(z(2026, 3, 7, 11))  # the tokens' validity has passed
    await worker.maintain()
    ann = await api.invite(running, "ann")
    assert (ann["state"], ann["end_reason"]) == ("expired", "token_expired")
    reminder = ann["messages"][1]
    assert (reminder["state"], reminder["rule"], reminder["reason"]) == (
        "suppressed",
        "token_expired",
        "token_expired",
    )
    bob = await api.invite(paused, "bob")
    assert (bob["state"], bob["end_reason"]) == ("expired", "token_expired")
    assert outcomes(bob) == [("suppressed", "token_expired")]
    assert ann["contact_erased"] and bob["contact_erased"]  # nothing more can be sent

    await api.control(f"dispatches/{paused['id']}/resume")
    for day in (9, 10):  # Monday, when Ann's reminder would have gone out
        clock.set(z(2026, 3, day, 10))
        await tick(worker)
        await worker.maintain()
    assert await api.pull() == []
    assert outcomes(await api.invite(running, "ann")) == [
        ("sent", None),
        ("suppressed", "token_expired"),
    ]
    assert outcomes(await api.invite(paused, "bob")) == [("suppressed", "token_expired")]


ERIN: dict[str, Any] = {
    "email": "erin.erasable@example.com",
    "mobile": "+447911123456",
    "attributes": {"loyalty_code": "ZX-Loyalty-7781", "first_name": "Erinna"},
}
FRED: dict[str, Any] = {
    "email": "fred.finished@example.org",
    "mobile": "+16502530000",
    "attributes": {"loyalty_code": "QF-Loyalty-4410"},
}
GIL: dict[str, Any] = {
    "email": "gil.pending@example.net",
    "mobile": "+14155550199",
    "attributes": {"loyalty_code": "GL-Loyalty-9902"},
}


def personal_values(person: dict[str, Any]) -> list[str]:
    return [person["email"], person["mobile"], *person["attributes"].values()]


async def test_finished_invites_are_erased_from_every_table(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext, backend: dict[str, str]
) -> None:
    policy = await api.policy("Erase", [EMAIL, {"channel": "sms", "delay": "PT1H"}])
    dispatch = await api.dispatch(policy)
    await api.post(
        dispatch, contact(ERIN, "erin"), contact(FRED, "fred"), **{"Idempotency-Key": "file-1"}
    )
    await tick(worker)
    assert recipients(await api.pull()) == [ERIN["email"], FRED["email"]]
    clock.advance(timedelta(minutes=10))
    fred_token = (await api.invite(dispatch, "fred"))["token"]
    response = await api.event({"type": "response", "token": fred_token}, backend)
    assert response.status_code == 200, response.text
    clock.advance(timedelta(minutes=20))
    await api.post(dispatch, contact(GIL, "gil"), **{"Idempotency-Key": "file-2"})
    await tick(worker)
    assert recipients(await api.pull()) == [GIL["email"]]
    clock.advance(timedelta(minutes=30))  # 11:00: Erin's SMS; Gil's is due at 11:30
    await tick(worker)
    assert recipients(await api.pull()) == [ERIN["mobile"]]
    assert (await api.invite(dispatch, "erin"))["state"] == "completed"

    before = await raw_scan(context)
    assert "owner@example.com" in before  # the scan does read what is stored in clear
    for value in personal_values(ERIN) + personal_values(FRED):
        # Pushed and acknowledged: the outbox rows, the only clear copies, went with the ack.
        assert value not in before, f"{value!r} still in a pushed outbox row"
    await worker.maintain()

    erin = await api.invite(dispatch, "erin")
    fred = await api.invite(dispatch, "fred")
    gil = await api.invite(dispatch, "gil")
    assert erin["contact_erased"] is True
    assert fred["contact_erased"] is True
    assert gil["contact_erased"] is False
    # What stays: states, reasons and times.
    assert outcomes(erin) == [("sent", None), ("sent", None)]
    assert outcomes(fred) == [("sent", None), ("suppressed", "responded")]
    assert outcomes(gil) == [("sent", None), ("pending", None)]
    after = await raw_scan(context)
    for value in personal_values(ERIN) + personal_values(FRED):
        assert value not in after, f"{value!r} still stored"
    async with context.sessions() as session:
        row = await session.get(Invite, gil["id"])
        assert row is not None and row.contact is not None
        assert GIL["email"] not in row.contact  # encrypted at rest…
        opened = open_contact(context.cipher, row.id, row.contact)  # …and still readable
    assert opened == {
        "email": GIL["email"],
        "mobile": GIL["mobile"],
        "attributes": GIL["attributes"],
    }
    # Erin clicks "unsubscribe" in her last message after her contact data was erased: the
    # token alone blocks every channel she had, from the hashes kept with the invite.
    response = await api.event({"type": "unsubscribe", "token": erin["token"]}, backend)
    assert response.status_code == 200, response.text
    assert (response.json()["applied"], response.json()["channels"]) == (True, ["email", "sms"])

    stats = await api.stats(dispatch)
    assert stats["invites"] == {"completed": 1, "ended": 1, "active": 1, "total": 3}
    assert stats["messages"] == {"sent": 4, "suppressed": 1, "pending": 1, "total": 6}
    assert stats["reasons"] == {"suppressed": {"responded": 1}}

    clock.advance(timedelta(minutes=30))  # Gil's SMS; then he is finished too
    await tick(worker)
    assert recipients(await api.pull()) == [GIL["mobile"]]
    await worker.maintain()
    assert (await api.invite(dispatch, "gil"))["contact_erased"] is True
    after = await raw_scan(context)
    for value in personal_values(ERIN) + personal_values(FRED) + personal_values(GIL):
        assert value not in after, f"{value!r} still stored"
    stats = await api.stats(dispatch)
    assert stats["invites"] == {"completed": 2, "ended": 1, "total": 3}
    assert stats["messages"] == {"sent": 5, "suppressed": 1, "total": 6}

    # Erin in a later dispatch: blocked on both channels by that unsubscribe.
    two_channels = await api.policy("Later", [EMAIL, {"channel": "sms", "delay": "PT1H"}])
    later = await api.dispatch(two_channels, "q2")
    await api.post(later, contact(ERIN, "erin-2"))
    await tick(worker)
    clock.advance(timedelta(hours=1))
    await tick(worker)
    assert await api.pull() == []
    assert outcomes(await api.invite(later, "erin-2")) == [("suppressed", "unsubscribed")] * 2


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


# --- R-POL-8, R-DSP-1, R-INC-7: pauses -----------------------------------------------------


@pytest.mark.parametrize(
    "scope", ["dispatch", "policy", "account", "admin:dispatch", "admin:policy"]
)
async def test_pause_holds_due_messages_and_resume_applies_the_rules_of_that_time(
    api: Api,
    globex: Api,
    worker: Worker,
    clock: FrozenClock,
    context: AppContext,
    operator: dict[str, str],
    scope: str,
) -> None:
    lineup = [EMAIL, {"channel": "sms", "delay": "PT1H"}]
    policy = await api.policy("Paused", lineup, business_rules=OFFICE_UTC)
    long = await api.dispatch(policy, "q1", "P14D")
    short = await api.dispatch(policy, "q2", "P1D")  # its tokens expire during the pause
    # Something the pause must not touch.
    control_api = globex if scope == "account" else api
    if scope in ("dispatch", "admin:dispatch"):
        control_policy = policy
    else:
        control_policy = await control_api.policy("Control", lineup, business_rules=OFFICE_UTC)
    control = await control_api.dispatch(control_policy, "q3")

    admin_pauses: list[str] = []  # operator pause records (admin:… scopes)
    if scope == "dispatch":
        await api.control(f"dispatches/{long['id']}/pause", operator)
        await api.control(f"dispatches/{short['id']}/pause", operator)
    elif scope == "policy":
        await api.control(f"policies/{policy['id']}/pause", operator)
    elif scope.startswith("admin:"):
        kind = scope.removeprefix("admin:")
        targets = [long["id"], short["id"]] if kind == "dispatch" else [policy["id"]]
        for target in targets:
            response = await api.client.post(
                "/v1/admin/pauses", headers=operator, json={"scope": kind, "target": target}
            )
            assert response.status_code == 201, response.text
            admin_pauses.append(response.json()["id"])
        unknown = await api.client.post(
            "/v1/admin/pauses", headers=operator, json={"scope": kind, "target": "nope"}
        )
        is_problem(unknown, 404)
        listed = await api.client.get("/v1/admin/pauses", headers=operator, params={"scope": kind})
        assert [p["id"] for p in listed.json()] == admin_pauses
    else:
        incident = await report_incident(api.client, operator)
        response = await api.client.post(
            "/v1/admin/pauses",
            headers=operator,
            json={"scope": "account", "target": "acme", "incident": incident},
        )
        assert response.status_code == 201, response.text
        pause_id = response.json()["id"]
        listed = await api.client.get("/v1/admin/pauses", headers=operator)
        assert [p["id"] for p in listed.json()] == [pause_id]
        for filters, expected in (
            ({"incident": incident}, [pause_id]),
            ({"scope": "channel"}, []),
            ({"scope": "account", "target": "acme"}, [pause_id]),
        ):
            listed = await api.client.get("/v1/admin/pauses", headers=operator, params=filters)
            assert [p["id"] for p in listed.json()] == expected, filters
        audit = await api.client.get(
            "/v1/admin/audit", headers=operator, params={"incident": incident}
        )
        assert [a["action"] for a in audit.json()["items"]] == ["pause.create", "incident.create"]

    await api.post(long, contact(ANN, "ann"))
    await api.post(short, contact(BOB, "bob"))
    await control_api.post(control, contact(CAT, "cat"))
    paused_invites = [(await api.invite(long, "ann"))["id"], (await api.invite(short, "bob"))["id"]]

    sent_to_control: list[dict[str, Any]] = []
    moments = [MONDAY_10, z(2026, 3, 2, 12), *(z(2026, 3, d, 10) for d in (3, 4, 5, 6))]
    for moment in [*moments, z(2026, 3, 6, 16, 59)]:
        clock.set(moment)
        await tick(worker)
        await worker.maintain()
        assert await outbox_rows(context, *paused_invites) == 0, moment
        bodies = await api.pull() + (await globex.pull() if scope == "account" else [])
        assert all(b["invite_id"] not in paused_invites for b in bodies), moment
        sent_to_control += bodies
        if moment == MONDAY_10:
            held = (await api.invite(long, "ann"))["messages"][0]
            assert (held["state"], held["rule"], held["reason"]) == (
                "held",
                "paused",
                "paused",
            )
    assert recipients(sent_to_control) == sorted([CAT["email"], CAT["mobile"]])
    ann = await api.invite(long, "ann")
    assert outcomes(ann) == [("held", "paused")]
    bob = await api.invite(short, "bob")
    assert (bob["state"], outcomes(bob)) == ("expired", [("suppressed", "token_expired")])

    # Resume on Friday 18:00: the window has closed meanwhile.
    clock.set(z(2026, 3, 6, 18))
    if scope == "dispatch":
        await api.control(f"dispatches/{long['id']}/resume", operator)
        await api.control(f"dispatches/{short['id']}/resume", operator)
    elif scope == "policy":
        await api.control(f"policies/{policy['id']}/resume", operator)
    else:
        for lifted in admin_pauses or [pause_id]:
            response = await api.client.delete(f"/v1/admin/pauses/{lifted}", headers=operator)
            assert response.status_code == 204, response.text
    await tick(worker)
    await worker.maintain()
    assert await api.pull() == []
    first = (await api.invite(long, "ann"))["messages"][0]
    assert (first["state"], first["reason"], utc(first["scheduled_for"])) == (
        "deferred",
        "deferred_business_hours",
        z(2026, 3, 9, 9),
    )
    assert outcomes(await api.invite(short, "bob")) == [("suppressed", "token_expired")]

    clock.set(z(2026, 3, 9, 8, 59))
    await tick(worker)
    assert await api.pull() == []
    clock.set(z(2026, 3, 9, 9))
    await tick(worker)
    assert recipients(await api.pull()) == [ANN["email"]]
    clock.set(z(2026, 3, 9, 10))
    await tick(worker)
    assert recipients(await api.pull()) == [ANN["mobile"]]
    # Holding lost nothing: every message of the paused invites ended in a final state.
    ann = await api.invite(long, "ann")
    assert (ann["state"], outcomes(ann)) == ("completed", [("sent", None), ("sent", None)])
    for invite in (ann, await api.invite(short, "bob")):
        assert all(m["state"] in ("sent", "suppressed") for m in invite["messages"])


async def test_channel_pause_holds_only_sms(
    api: Api, globex: Api, worker: Worker, clock: FrozenClock, operator: dict[str, str]
) -> None:
    lineup = [EMAIL, {"channel": "sms", "delay": "PT1H"}]
    policy = await api.policy("Mixed", lineup)
    dispatch = await api.dispatch(policy)
    other = await globex.dispatch(await globex.policy("G", lineup))
    for bad, field in (
        ({"scope": "channel", "target": "fax"}, "target"),
        ({"scope": "channel", "target": "sms", "incident": "inc_nope"}, "incident"),
        ({"scope": "account", "target": "nope"}, None),  # 404: no such account
    ):
        refused = await api.client.post("/v1/admin/pauses", headers=operator, json=bad)
        if field is None:
            is_problem(refused, 404)
        else:
            assert is_problem(refused, 422)["field"] == field, refused.text
    assert (await api.client.get("/v1/admin/pauses", headers=operator)).json() == []
    response = await api.client.post(
        "/v1/admin/pauses", headers=operator, json={"scope": "channel", "target": "sms"}
    )
    assert response.status_code == 201, response.text
    pause_id = response.json()["id"]
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    await globex.post(other, contact(DAN, "dan"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com", "bob@example.com"]
    assert recipients(await globex.pull()) == ["dan@example.com"]

    clock.set(z(2026, 3, 2, 11))
    await api.post(dispatch, contact(CAT, "cat"))  # email still flows during the pause
    for hour in (11, 12, 15):
        clock.set(z(2026, 3, 2, hour))
        await tick(worker)
        bodies = await api.pull() + await globex.pull()
        assert {b["channel"] for b in bodies} <= {"email"}, hour
        if hour == 11:
            assert recipients(bodies) == ["cat@example.com"]
    for ext in ("ann", "bob"):
        assert outcomes(await api.invite(dispatch, ext))[1] == ("held", "paused")
    assert outcomes(await globex.invite(other, "dan"))[1] == ("held", "paused")

    clock.set(z(2026, 3, 2, 16))
    response = await api.client.delete(f"/v1/admin/pauses/{pause_id}", headers=operator)
    assert response.status_code == 204, response.text
    await tick(worker)
    assert recipients(await api.pull()) == sorted([ANN["mobile"], BOB["mobile"], CAT["mobile"]])
    assert recipients(await globex.pull()) == [DAN["mobile"]]


@pytest.mark.parametrize("how", ["resume", "business_rules"])
async def test_released_messages_are_not_reported_delayed(
    api: Api, worker: Worker, clock: FrozenClock, how: str
) -> None:
    if how == "resume":
        policy = await api.policy("Resume")
        dispatch = await api.dispatch(policy)
        await api.control(f"dispatches/{dispatch['id']}/pause")
    else:
        clock.set(SATURDAY_10)
        policy = await api.policy("Weekdays", business_rules=hours("08:00", "17:00"))
        dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert outcomes(await api.invite(dispatch, "ann"))[0][0] in ("held", "deferred")
    clock.advance(timedelta(hours=2))
    if how == "resume":
        await api.control(f"dispatches/{dispatch['id']}/resume")
    else:
        await api.patch_policy(
            policy["id"], {"business_rules": hours("00:00", "24:00", days=ALL_DAYS)}
        )
    await worker.maintain()  # the maintenance job may well run before the claim loop
    message = (await api.invite(dispatch, "ann"))["messages"][0]
    assert message["state"] != "delayed", message
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]


async def test_a_deferred_message_nobody_decides_once_its_window_opens_is_delayed(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(SATURDAY_10)
    policy = await api.policy("Weekdays", business_rules=hours("08:00", "17:00"))
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert outcomes(await api.invite(dispatch, "ann")) == [("deferred", "deferred_business_hours")]
    clock.set(z(2026, 3, 9, 8, 14))  # Monday: the window opened 14 minutes ago, no worker ran
    await worker.maintain()
    assert outcomes(await api.invite(dispatch, "ann"))[0][0] == "deferred"
    clock.set(z(2026, 3, 9, 8, 16))  # past DISPATCH_DELAYED_AFTER_SECONDS (15 minutes)
    await worker.maintain()
    assert outcomes(await api.invite(dispatch, "ann")) == [("delayed", "not_decided_in_time")]
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    assert outcomes(await api.invite(dispatch, "ann")) == [("sent", None)]


def latency(suffix: str) -> float:
    return REGISTRY.get_sample_value(f"dispatch_pipeline_latency_seconds_{suffix}") or 0.0


async def test_a_push_reported_delayed_reads_sent_once_the_queue_takes_it(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Late push")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await worker.deliver()  # decided and written to the outbox, but no relay ran
    clock.advance(timedelta(minutes=20))
    await api.post(dispatch, contact(BOB, "bob"))
    await worker.deliver()
    await worker.maintain()
    late = (await api.invite(dispatch, "ann"))["messages"][0]
    assert (late["state"], late["reason"]) == ("delayed", "not_pushed_in_time"), late
    count, total = (latency(suffix) for suffix in ("count", "sum"))
    await worker.relay_outbox()  # one round: Ann's late push and Bob's fresh one
    assert recipients(await api.pull()) == ["ann@example.com", "bob@example.com"]
    assert latency("count") - count == 2  # due → pushed, one sample per message
    assert 20 * 60 <= latency("sum") - total < 21 * 60  # Ann waited 20 minutes, Bob none
    for name in ("ann", "bob"):
        message = (await api.invite(dispatch, name))["messages"][0]
        assert (message["state"], message["reason"]) == ("sent", None), message


# --- R-RUL-3: policy preview --------------------------------------------------------------


def window(message: dict[str, Any]) -> tuple[datetime, datetime, str]:
    w = message["window"]
    return utc(w["start"]), utc(w["end"]), w["time_zone"]


async def test_preview_of_the_saved_policy(api: Api) -> None:
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    response = await api.preview(policy["id"], {"posted_at": POSTED_AT})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["policy"], body["proposed"]) == (policy["id"], False)
    assert utc(body["posted_at"]) == z(2026, 3, 6, 15, 30)
    messages = body["messages"]
    assert [
        (m["position"], m["lineup_message_id"], m["channel"], m["delay"]) for m in messages
    ] == [(s["position"], s["id"], s["channel"], s["delay"]) for s in policy["lineup"]]
    first, second, third = messages
    # 1: Friday 16:30 Berlin, inside the window.
    assert utc(first["due_at"]) == utc(first["send_at"]) == z(2026, 3, 6, 15, 30)
    assert (first["deferred"], first["reason"]) == (False, None)
    assert window(first) == (z(2026, 3, 6, 7), z(2026, 3, 6, 16), "Europe/Berlin")
    # 2: due 18:30 Berlin, after closing: Monday 08:00 Berlin.
    assert utc(second["due_at"]) == z(2026, 3, 6, 17, 30)
    assert utc(second["send_at"]) == z(2026, 3, 9, 7)
    assert (second["deferred"], second["reason"]) == (True, "deferred_business_hours")
    assert window(second) == (z(2026, 3, 9, 7), z(2026, 3, 9, 16), "Europe/Berlin")
    # 3: a day after message 2 went out: Tuesday 08:00 Berlin.
    assert utc(third["due_at"]) == utc(third["send_at"]) == z(2026, 3, 10, 7)
    assert (third["deferred"], third["reason"]) == (False, None)
    assert window(third) == (z(2026, 3, 10, 7), z(2026, 3, 10, 16), "Europe/Berlin")


async def test_preview_of_proposed_settings_instead_of_the_saved_ones(api: Api) -> None:
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    etag = await api.etag(policy["id"])
    proposed = {
        "lineup": [{"channel": "sms", "delay": "PT1H"}, {"channel": "email", "delay": "PT2H"}],
        "business_rules": hours("08:00", "20:00", "Europe/Berlin", (*WEEKDAYS, "sat")),
    }
    response = await api.preview(policy["id"], {"posted_at": POSTED_AT, "policy": proposed})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["proposed"] is True
    messages = body["messages"]
    assert [(m["position"], m["lineup_message_id"], m["channel"]) for m in messages] == [
        (1, None, "sms"),
        (2, None, "email"),
    ]
    # 17:30 and 19:30 Berlin: open until 20:00 under the proposal.
    assert [utc(m["send_at"]) for m in messages] == [z(2026, 3, 6, 16, 30), z(2026, 3, 6, 18, 30)]
    assert [m["deferred"] for m in messages] == [False, False]
    assert window(messages[1])[1] == z(2026, 3, 6, 19)
    # Lineup only: the default business rules (Mon–Fri all day, UTC).
    response = await api.preview(
        policy["id"],
        {"posted_at": "2026-03-07T10:00:00Z", "policy": {"lineup": [EMAIL]}},
    )
    assert response.status_code == 200, response.text
    only = response.json()["messages"][0]
    assert (utc(only["send_at"]), only["reason"]) == (z(2026, 3, 9, 0), "deferred_business_hours")
    # A proposal is validated like a saved policy.
    bad = await api.preview(
        policy["id"],
        {
            "posted_at": POSTED_AT,
            "policy": {"lineup": [EMAIL, {"channel": "sms", "delay": "PT5M"}]},
        },
    )
    is_problem(bad, 422)
    # The saved policy is untouched.
    assert await api.etag(policy["id"]) == etag
    saved = await api.preview(policy["id"], {"posted_at": POSTED_AT})
    assert utc(saved.json()["messages"][1]["send_at"]) == z(2026, 3, 9, 7)


async def test_preview_uses_the_contact_time_zone_when_the_policy_does(api: Api) -> None:
    local = await api.policy(
        "Local",
        PREVIEW_LINEUP,
        business_rules={**BERLIN_HOURS, "use_contact_time_zone": True},
    )
    plain = await api.policy("Plain", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    body = {"posted_at": POSTED_AT, "time_zone": "America/New_York"}
    response = await api.preview(local["id"], body)
    assert response.status_code == 200, response.text
    first, second, third = response.json()["messages"]
    # 10:30 and 12:30 in New York (EST): open.
    assert (utc(first["send_at"]), first["deferred"]) == (z(2026, 3, 6, 15, 30), False)
    assert (utc(second["send_at"]), second["deferred"]) == (z(2026, 3, 6, 17, 30), False)
    assert window(second) == (z(2026, 3, 6, 13), z(2026, 3, 6, 22), "America/New_York")
    # Saturday 12:30 EST → Monday 08:00 EDT (the clocks changed on Sunday 8 March).
    assert utc(third["due_at"]) == z(2026, 3, 7, 17, 30)
    assert (utc(third["send_at"]), third["reason"]) == (
        z(2026, 3, 9, 12),
        "deferred_business_hours",
    )
    assert window(third)[2] == "America/New_York"
    # Without a contact zone, or for a policy that does not use it: the policy's zone.
    for policy_id, request in (
        (local["id"], {"posted_at": POSTED_AT}),
        (plain["id"], body),
    ):
        response = await api.preview(policy_id, request)
        assert response.status_code == 200, response.text
        messages = response.json()["messages"]
        assert [utc(m["send_at"]) for m in messages] == [
            z(2026, 3, 6, 15, 30),
            z(2026, 3, 9, 7),
            z(2026, 3, 10, 7),
        ]
        assert {m["window"]["time_zone"] for m in messages} == {"Europe/Berlin"}
    bad = await api.preview(local["id"], {"posted_at": POSTED_AT, "time_zone": "Mars/Olympus"})
    assert is_problem(bad, 422)["field"] == "time_zone"


async def test_preview_refuses_a_naive_posted_at(api: Api) -> None:
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    for body in ({"posted_at": "2026-03-06T16:30:00"}, {}, {"posted_at": "friday"}):
        response = await api.preview(policy["id"], body)
        assert is_problem(response, 422)["field"] == "posted_at", body
    missing = await api.preview("pol_nope", {"posted_at": POSTED_AT})
    is_problem(missing, 404)


async def test_preview_writes_nothing(
    api: Api, worker: Worker, context: AppContext, operator: dict[str, str]
) -> None:
    policy = await api.policy(
        "Berlin", PREVIEW_LINEUP, business_rules={**BERLIN_HOURS, "use_contact_time_zone": True}
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    await api.pull()

    async def audit() -> list[dict[str, Any]]:
        response = await api.client.get("/v1/admin/audit", headers=operator, params={"limit": 1000})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    audit_before, counts_before = await audit(), await row_counts(context)
    scan_before = await raw_scan(context)
    for body in (
        {"posted_at": POSTED_AT},
        {"posted_at": POSTED_AT, "time_zone": "Asia/Tokyo"},
        {"posted_at": POSTED_AT, "policy": {"lineup": PREVIEW_LINEUP}},
        {"posted_at": "2026-03-06T16:30:00"},  # refused
    ):
        await api.preview(policy["id"], body)
    await tick(worker)
    assert await api.pull() == []
    assert await row_counts(context) == counts_before
    assert await audit() == audit_before
    assert await raw_scan(context) == scan_before


@pytest.mark.parametrize("time_zone", [None, "America/New_York"])
async def test_preview_matches_what_the_pipeline_does(
    api: Api, worker: Worker, clock: FrozenClock, time_zone: str | None
) -> None:
    rules = {**BERLIN_HOURS, "use_contact_time_zone": time_zone is not None}
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=rules)
    dispatch = await api.dispatch(policy, validity="P14D")
    request: dict[str, Any] = {"posted_at": POSTED_AT}
    person = contact(ANN, "ann")
    if time_zone:
        request["time_zone"] = time_zone
        person["time_zone"] = time_zone
    response = await api.preview(policy["id"], request)
    assert response.status_code == 200, response.text
    preview = response.json()["messages"]

    clock.set(utc(POSTED_AT))
    await api.post(dispatch, person)
    bodies: list[dict[str, Any]] = []
    for _ in range(20):  # walk the worker from one scheduled time to the next
        await tick(worker)
        bodies += await api.pull()
        invite = await api.invite(dispatch, "ann")
        waiting = [m for m in invite["messages"] if m["state"] in ("pending", "deferred")]
        if not waiting:
            break
        upcoming = utc(waiting[0]["scheduled_for"])
        assert upcoming > clock.now(), waiting
        clock.set(upcoming - timedelta(minutes=1))
        await tick(worker)
        assert await api.pull() == []  # nothing goes out early
        clock.set(upcoming)
    assert invite["state"] == "completed"
    assert [utc(m["sent_at"]) for m in invite["messages"]] == [utc(p["send_at"]) for p in preview]
    assert [utc(m["due_at"]) for m in invite["messages"]] == [utc(p["due_at"]) for p in preview]
    assert [(b["lineup_position"], utc(b["sent_at"])) for b in bodies] == [
        (p["position"], utc(p["send_at"])) for p in preview
    ]
    assert [m["state"] == "sent" for m in invite["messages"]] == [True] * len(PREVIEW_LINEUP)
