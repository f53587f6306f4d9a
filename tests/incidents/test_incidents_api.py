"""Incidents through the API (R-INC-1/2/3/6, post-mortem): fields, states, clocks and
filters, status notices and the public feed, the communications log, authorization."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import AuditRecord
from tests.conftest import T0, bearer, new_key, setup_account
from tests.incidents.conftest import Desk

MIN = timedelta(minutes=1)
FULL = {
    "title": "SQS relay failing for Acme",
    "service": "Invitation relay",
    "description": "Pushes to SQS time out.",
    "impact": "Invitations are not delivered.",
    "symptoms": "Messages end failed",
    "steps_to_reproduce": "Post a contact; watch the relay.",
    "evidence_links": ["https://grafana.example/d/relay"],
    "stakeholders": ["Support lead", "CTO"],
    "impacted_accounts": ["acme"],
    "commander": "Ines Commander",
    "communicator": "Carl Comms",
    "customer_tickets": ["ZD-1234"],
}


async def test_create_edit_and_read_an_incident(
    desk: Desk, clock: FrozenClock, context: AppContext
) -> None:
    await setup_account(desk.client, desk.admin)
    created = await desk.incident(**FULL, started_at="2026-03-02T10:50:00+02:00")
    for name, value in FULL.items():
        assert created[name] == value, name
    assert created["state"] == "reported"
    assert created["severity"] is None and created["major"] is False
    assert created["started_at"] == "2026-03-02T08:50:00Z"
    assert created["reported_at"] == "2026-03-02T09:00:00Z"
    clocks = {c["name"]: c for c in created["clocks"]}
    assert clocks["ack"] == {
        "name": "ack",
        "running": True,
        "due_at": "2026-03-02T09:15:00Z",
        "opens_at": None,
        "overdue": False,
    }
    assert not clocks["update"]["running"] and not clocks["postmortem"]["running"]

    clock.advance(5 * MIN)
    patched = await desk.call(
        "PATCH",
        f"/v1/incidents/{created['id']}",
        json={"severity": "P2", "customer_tickets": ["ZD-1234", "ZD-9"]},
        headers={**desk.ops, "If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["severity"] == "P2" and patched.json()["major"] is True
    assert patched.json()["updated_at"] == "2026-03-02T09:05:00Z"
    assert patched.headers["ETag"] == '"2"'
    stale = await desk.call(
        "PATCH",
        f"/v1/incidents/{created['id']}",
        json={"impact": "x"},
        headers={**desk.ops, "If-Match": '"1"'},
    )
    assert stale.status_code == 412
    for bad in (
        {"started_at": "2026-03-02T09:00:00"},  # naive
        {"started_at": "2026-03-03T09:00:00Z"},  # future
        {"severity": "P5"},
        {"title": None},
        {"impacted_accounts": ["nobody"]},
        {"evidence_links": ["javascript:alert(1)"]},
        {"state": "closed"},  # only through transitions
    ):
        response = await desk.call("PATCH", f"/v1/incidents/{created['id']}", json=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    async with context.sessions() as session:
        audit = (
            (
                await session.execute(
                    select(AuditRecord).where(AuditRecord.action == "incident.update")
                )
            )
            .scalars()
            .one()
        )
    assert audit.incident == created["id"]
    assert audit.before is not None and audit.after is not None
    assert (audit.before["severity"], audit.after["severity"]) == (None, "P2")
    missing = await desk.call("GET", "/v1/incidents/inc_missing")
    assert missing.status_code == 404


async def test_states_and_illegal_jumps(desk: Desk, clock: FrozenClock) -> None:
    incident = await desk.incident()
    jump = await desk.call(
        "POST", f"/v1/incidents/{incident['id']}/transitions", json={"to": "resolved"}
    )
    assert jump.status_code == 409
    problem = jump.json()
    assert problem["type"].endswith(":illegal-transition")
    assert (problem["current_state"], problem["allowed"]) == ("reported", ["acknowledged"])
    no_severity = await desk.call(
        "POST", f"/v1/incidents/{incident['id']}/transitions", json={"to": "acknowledged"}
    )
    assert (no_severity.status_code, no_severity.json()["field"]) == (422, "severity")

    stamps = {}
    for step in ("acknowledged", "investigating", "identified", "investigating", "identified"):
        clock.advance(MIN)
        moved = await desk.move(incident, step, severity="P3")
        stamps[step] = moved[f"{step}_at"]
        assert moved["state"] == step
    assert stamps["acknowledged"] == "2026-03-02T09:01:00Z"
    assert stamps["identified"] == "2026-03-02T09:05:00Z"  # re-entered: stamped again
    resolved = await desk.move(incident, "resolved")
    assert resolved["resolved_at"] == "2026-03-02T09:05:00Z"
    assert not any(c["running"] for c in resolved["clocks"])  # P3: no post-mortem clock
    closed = await desk.move(incident, "closed")  # P3 closes without a post-mortem
    assert closed["closed_at"] is not None
    for target in ("investigating", "closed"):
        again = await desk.call(
            "POST", f"/v1/incidents/{incident['id']}/transitions", json={"to": target}
        )
        assert again.status_code == 409 and again.json()["allowed"] == []
    edit = await desk.call("PATCH", f"/v1/incidents/{incident['id']}", json={"impact": "x"})
    assert edit.status_code == 409 and edit.json()["type"].endswith(":incident-closed")


async def test_major_incident_needs_its_postmortem_to_close(desk: Desk, clock: FrozenClock) -> None:
    incident = await desk.incident(started_at=(T0 - 30 * MIN).isoformat())
    await desk.move(incident, "acknowledged", severity="P2")
    early = await desk.call(
        "PUT",
        f"/v1/incidents/{incident['id']}/postmortem",
        json={"findings": "f", "improvement_actions": ["a"], "link": "https://wiki.example/pm"},
    )
    assert early.status_code == 409
    await desk.move(incident, "investigating", "identified")
    clock.set(T0 + 2 * 60 * MIN)
    resolved = await desk.move(incident, "resolved")
    pm_clock = next(c for c in resolved["clocks"] if c["name"] == "postmortem")
    assert pm_clock["due_at"] == "2026-03-04T11:00:00Z"
    assert pm_clock["opens_at"] == "2026-03-03T11:00:00Z"
    refused = await desk.call(
        "POST", f"/v1/incidents/{incident['id']}/transitions", json={"to": "closed"}
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith(":postmortem-required")

    body = {
        "findings": "A credential expired.",
        "improvement_actions": ["Alert on credential expiry", "Runbook"],
        "link": "https://wiki.example/pm/42",
        "service_credits": [{"account": "acme", "credit": "10% of March"}],
    }
    unknown = await desk.call(
        "PUT",
        f"/v1/incidents/{incident['id']}/postmortem",
        json={**body, "service_credits": [{"account": "nobody", "credit": "x"}]},
    )
    assert unknown.status_code == 422
    await setup_account(desk.client, desk.admin)
    recorded = await desk.call("PUT", f"/v1/incidents/{incident['id']}/postmortem", json=body)
    assert recorded.status_code == 201, recorded.text
    pm = recorded.json()
    assert (pm["time_to_resolution_seconds"], pm["time_to_resolution"]) == (9000, "PT2H30M")
    assert pm["service_credits"] == [{"account": "acme", "credit": "10% of March", "note": None}]
    without_link = {key: value for key, value in body.items() if key != "link"}
    revised = await desk.call(
        "PUT",
        f"/v1/incidents/{incident['id']}/postmortem",
        json={**without_link, "findings": "More"},  # R-INC-2 names no link: it is optional
    )
    assert revised.status_code == 200, revised.text
    assert (revised.json()["findings"], revised.json()["link"]) == ("More", None)
    shown = (await desk.call("GET", f"/v1/incidents/{incident['id']}")).json()
    assert shown["postmortem_recorded"] and not shown["overdue"]
    closed = await desk.move(incident, "closed")
    assert closed["state"] == "closed"
    assert (await desk.call("GET", f"/v1/incidents/{incident['id']}/postmortem")).json()[
        "findings"
    ] == "More"


async def test_list_filters_and_overdue(desk: Desk, clock: FrozenClock) -> None:
    await setup_account(desk.client, desk.admin, "acme")
    await setup_account(desk.client, desk.admin, "other")
    quiet = await desk.incident(title="Quiet", impacted_accounts=["acme"])
    clock.advance(MIN)
    await desk.incident(title="Loud", severity="P1", impacted_accounts=["other"])
    clock.advance(MIN)
    done = await desk.incident(title="Done")
    await desk.move(done, "acknowledged", "investigating", "identified", "resolved", severity="P4")
    await desk.move(done, "closed")
    await desk.move(quiet, "acknowledged", severity="P3")  # at 09:02: ack on time

    async def titles(**params: Any) -> list[str]:
        response = await desk.call("GET", "/v1/incidents", params=params)
        assert response.status_code == 200, response.text
        return [i["title"] for i in response.json()["items"]]

    assert await titles() == ["Done", "Loud", "Quiet"]
    assert await titles(state="acknowledged") == ["Quiet"]
    assert await titles(severity="P1") == ["Loud"]
    assert await titles(account="other") == ["Loud"]
    assert await titles(open="true") == ["Loud", "Quiet"]
    assert await titles(open="false") == ["Done"]
    assert await titles(overdue="true") == []

    clock.set(T0 + MIN + 15 * MIN)  # Loud's ack is due now: on time still
    assert await titles(overdue="true") == []
    clock.advance(timedelta(seconds=1))
    assert await titles(overdue="true") == ["Loud"]
    assert await titles(overdue="true", clock="ack") == ["Loud"]
    assert await titles(overdue="true", clock="update") == []
    clock.set(T0 + 2 * MIN + 30 * MIN + timedelta(seconds=1))  # Quiet's update now missed
    assert await titles(overdue="true") == ["Loud", "Quiet"]
    assert await titles(overdue="true", clock="update") == ["Quiet"]
    assert await titles(overdue="false") == ["Done"]
    page = (await desk.call("GET", "/v1/incidents", params={"limit": 2})).json()
    assert [i["title"] for i in page["items"]] == ["Done", "Loud"]
    rest = (
        await desk.call("GET", "/v1/incidents", params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert ([i["title"] for i in rest["items"]], rest["next_cursor"]) == (["Quiet"], None)
    bad = await desk.call("GET", "/v1/incidents", params={"cursor": "garbage"})
    assert bad.status_code == 422
    shown = (await desk.call("GET", f"/v1/incidents/{quiet['id']}")).json()
    update = next(c for c in shown["clocks"] if c["name"] == "update")
    assert (update["due_at"], update["overdue"], shown["overdue"]) == (
        "2026-03-02T09:32:00Z",
        True,
        True,
    )


async def test_status_notices_and_public_feed(desk: Desk, clock: FrozenClock) -> None:
    await setup_account(desk.client, desk.admin, "acme")
    incident = await desk.incident(title="Acme is down", impacted_accounts=["acme"])
    base = f"/v1/incidents/{incident['id']}/status-updates"
    for bad, status in (
        ({"template": "investigating"}, 422),  # symptoms needed
        ({"template": "investigating", "symptoms": "x", "eta": "2026-03-02T12:00:00Z"}, 422),
        ({"template": "identified", "symptoms": "x"}, 422),  # ETA needed
        ({"template": "identified", "symptoms": "x", "eta": "2026-03-02T12:00:00"}, 422),
        ({"template": "resolved"}, 409),  # not resolved yet
        ({"template": "investigating", "symptoms": "x", "accounts": ["nobody"]}, 422),
    ):
        response = await desk.call("POST", base, json=bad)
        assert response.status_code == status, (bad, response.text)

    await desk.move(incident, "acknowledged", severity="P1")
    clock.advance(10 * MIN)
    posted = await desk.call(
        "POST", base, json={"template": "investigating", "symptoms": "Emails arrive late"}
    )
    assert posted.status_code == 201, posted.text
    shown = (await desk.call("GET", f"/v1/incidents/{incident['id']}")).json()
    assert shown["last_update_at"] == "2026-03-02T09:10:00Z"
    update = next(c for c in shown["clocks"] if c["name"] == "update")
    assert update["due_at"] == "2026-03-02T09:40:00Z"

    async def feed() -> list[dict[str, Any]]:
        response = await desk.client.get("/v1/status-feed")  # no API key
        assert response.status_code == 200, response.text
        assert "acme" not in response.text.lower()  # no account names unless a notice names one
        assert "Acme is down" not in response.text
        notices: list[dict[str, Any]] = response.json()["notices"]
        return notices

    live = await feed()
    assert [(n["template"], n["incident"]) for n in live] == [("investigating", incident["id"])]
    assert live[0]["text"].startswith("Investigating – ")

    await desk.move(incident, "investigating")
    clock.advance(MIN)
    identified = await desk.call(
        "POST",
        base,
        json={
            "template": "identified",
            "symptoms": "Emails arrive late",
            "eta": "2026-03-02T10:30:00+01:00",
        },
    )
    assert identified.status_code == 201
    assert "ETA: 2026-03-02 09:30 UTC" in identified.json()["text"]
    assert [n["template"] for n in await feed()] == ["identified"]  # superseded, not both
    await desk.move(incident, "identified", "resolved")
    clock.set(T0 + 60 * MIN)
    resolved = await desk.call("POST", base, json={"template": "resolved"})
    assert resolved.status_code == 201
    assert resolved.json()["expires_at"] == "2026-03-02T11:00:00Z"
    late = await desk.call("POST", base, json={"template": "investigating", "symptoms": "x"})
    assert late.status_code == 409
    clock.set(T0 + 2 * 60 * MIN - timedelta(seconds=1))
    assert [n["template"] for n in await feed()] == ["resolved"]
    clock.set(T0 + 2 * 60 * MIN)  # one hour after posting: gone
    assert await feed() == []
    history = (await desk.call("GET", base)).json()
    assert [n["template"] for n in history] == ["investigating", "identified", "resolved"]


async def test_a_notice_may_name_accounts(desk: Desk) -> None:
    await setup_account(desk.client, desk.admin, "acme")
    incident = await desk.incident()
    posted = await desk.call(
        "POST",
        f"/v1/incidents/{incident['id']}/status-updates",
        json={"template": "investigating", "symptoms": "Slow", "accounts": ["acme"]},
    )
    assert posted.status_code == 201
    notices = (await desk.client.get("/v1/status-feed")).json()["notices"]
    assert notices[0]["accounts"] == ["Acme"]
    assert notices[0]["text"].endswith("Affected accounts: Acme.")


async def test_communications_log(desk: Desk, clock: FrozenClock) -> None:
    await setup_account(desk.client, desk.admin, "acme")
    await setup_account(desk.client, desk.admin, "other")
    incident = await desk.incident()
    base = f"/v1/incidents/{incident['id']}/communications"
    entries = [
        {"account": "acme", "channel": "phone", "recipient": "+14155550100", "what": "Called"},
        {
            "account": "other",
            "channel": "direct_email",
            "recipient": "owner@example.com",
            "what": "Sent the notice",
            "by": "Carl Comms",
            "at": "2026-03-02T08:30:00Z",
        },
        {"account": "acme", "channel": "in_app", "recipient": "Olivia", "what": "Banner"},
    ]
    for entry in entries:
        clock.advance(MIN)
        response = await desk.call("POST", base, json=entry)
        assert response.status_code == 201, response.text
    for bad in (
        {**entries[0], "channel": "sms"},
        {**entries[0], "account": "nobody"},
        {**entries[0], "at": "2026-03-03T00:00:00Z"},
    ):
        assert (await desk.call("POST", base, json=bad)).status_code == 422
    acme = (await desk.call("GET", base, params={"account": "acme"})).json()
    assert [e["what"] for e in acme] == ["Called", "Banner"]
    assert acme[0]["by"].startswith("key_") or acme[0]["by"]
    everything = (await desk.call("GET", base)).json()
    other = next(e for e in everything if e["account"] == "other")
    assert (other["by"], other["at"]) == ("Carl Comms", "2026-03-02T08:30:00Z")


async def test_only_operators_and_admins(
    client: httpx.AsyncClient, context: AppContext, desk: Desk
) -> None:
    incident = await desk.incident()
    backend = bearer(await new_key(context, "backend"))
    for method, path in (
        ("GET", "/v1/incidents"),
        ("GET", f"/v1/incidents/{incident['id']}"),
        ("POST", "/v1/incidents"),
        ("GET", "/v1/admin/notification-webhooks"),
    ):
        response = await client.request(method, path, headers=backend, json={})
        assert response.status_code == 403, (method, path)
        assert response.json()["type"].endswith(":forbidden")
        assert (await client.request(method, path)).status_code == 401
    assert (await client.get("/v1/status-feed")).status_code == 200


async def test_acknowledge_endpoint_agrees_the_severity_and_stops_the_ack_clock(
    desk: Desk, clock: FrozenClock
) -> None:
    incident = await desk.incident()
    url = f"/v1/incidents/{incident['id']}/acknowledge"
    missing = await desk.call("POST", url)
    assert (missing.status_code, missing.json()["field"]) == (422, "severity")
    bad = await desk.call("POST", url, json={"severity": "P9"})
    assert (bad.status_code, bad.json()["field"]) == (422, "severity")
    assert (await desk.call("GET", f"/v1/incidents/{incident['id']}")).json()["state"] == "reported"

    clock.advance(MIN)
    acknowledged = await desk.call("POST", url, json={"severity": "P2", "note": "on it"})
    assert acknowledged.status_code == 200, acknowledged.text
    body = acknowledged.json()
    assert (body["state"], body["severity"]) == ("acknowledged", "P2")
    assert body["acknowledged_at"] == "2026-03-02T09:01:00Z"
    ack_clock = next(c for c in body["clocks"] if c["name"] == "ack")
    assert not ack_clock["running"]
    again = await desk.call("POST", url, json={"severity": "P2"})
    assert again.status_code == 409 and again.json()["type"].endswith(":illegal-transition")
