"""Controlling invites end to end: expiry and erasure (R-INV-5). Token expiry ends the
waiting messages; finished invites are erased from every table.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Invite
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.security.sealing import open_contact
from tests.helpers import (
    ANN,
    BOB,
    EMAIL,
    FRIDAY_10,
    Api,
    contact,
    outcomes,
    raw_scan,
    recipients,
    tick,
    z,
)

# --- R-INV-5: expiry and erasure ----------------------------------------------------------


async def test_token_expiry_ends_waiting_messages(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    clock.set(FRIDAY_10)
    policy = await api.policy(
        "Short",
        [EMAIL, {"channel": "email", "delay": "P1D"}],
        # too_late off, so that the reminder waits for the expiry job (see
        # test_pipeline_too_late.py for the rule on).
        business_rules={"min_validity_left": "PT0S"},
    )
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
