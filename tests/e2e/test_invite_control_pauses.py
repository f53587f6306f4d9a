"""Controlling invites end to end: pauses (R-POL-8, R-DSP-1, R-INC-7). A pause holds due
messages and resume applies the rules of that time; channel pauses hold only their
channel; released and deferred messages are reported delayed or not as they should.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import report_incident
from tests.helpers import (
    ALL_DAYS,
    ANN,
    BOB,
    CAT,
    DAN,
    EMAIL,
    MONDAY_10,
    OFFICE_UTC,
    SATURDAY_10,
    Api,
    contact,
    hours,
    is_problem,
    outbox_rows,
    outcomes,
    recipients,
    tick,
    utc,
    z,
)

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
