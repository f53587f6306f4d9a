"""Resends (R-INC-5) and approvals: the window rule at 59/60/61 minutes, approvals by the
account's owner or admins only, at most once per approval (also under concurrency), the
pipeline's checks on the resend, and delayed originals withdrawn so nothing goes twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import AuditRecord, IncidentResend, Message
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import T0
from tests.helpers import tick
from tests.incidents.conftest import Desk, failed_sendings

MIN = timedelta(minutes=1)


async def _count(context: AppContext, query: Any) -> int:
    async with context.sessions() as session:
        return int((await session.execute(query)).scalar_one())


async def _messages(context: AppContext) -> int:
    return await _count(context, select(func.count()).select_from(Message))


async def _resend(
    desk: Desk,
    incident: dict[str, Any],
    *ids: str,
    dry_run: bool = False,
    status: int = 200,
    **extra: Any,
) -> dict[str, Any]:
    response = await desk.call(
        "POST",
        f"/v1/incidents/{incident['id']}/resends",
        json={"sendings": list(ids), "dry_run": dry_run, **extra},
    )
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def _outcomes(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["sending"], r["outcome"]) for r in result["results"]]


async def _approve(desk: Desk, incident: dict[str, Any], **body: Any) -> Any:
    payload = {
        "account": "acme",
        "approver_email": "owner@example.com",
        "channel": "phone",
        "approved_at": desk.clock.now().isoformat(),
        **body,
    }
    return await desk.call("POST", f"/v1/incidents/{incident['id']}/approvals", json=payload)


async def _failed_incident(
    desk: Desk, worker: Worker, *emails: str
) -> tuple[dict[str, Any], list[str]]:
    await desk.setup()
    incident = await desk.incident(started_at=(T0 - MIN).isoformat(), severity="P2")
    await desk.queue("unreachable")
    messages = await failed_sendings(desk, worker, *emails)
    await desk.queue("local")
    return incident, [m["id"] for m in messages]


async def test_window_boundaries_59_60_61(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    incident, (ann, bob) = await _failed_incident(
        desk, worker, "ann@example.com", "bob@example.com"
    )
    before = await _messages(context)
    for minutes, expected in ((59, "allowed"), (60, "allowed"), (61, "needs_approval")):
        clock.set(T0 + minutes * MIN)
        dry = await _resend(desk, incident, ann, dry_run=True)
        assert dry["dry_run"] is True and dry["threshold_minutes"] == 60
        item = dry["results"][0]
        assert (item["outcome"], item["window_minutes"]) == (expected, minutes), item
        assert item["scheduled_at"] == "2026-03-02T09:00:00Z"
    assert "exceeds the 60-minute threshold" in item["reason"]
    assert await _messages(context) == before  # dry runs write nothing

    clock.set(T0 + 60 * MIN)
    done = await _resend(desk, incident, ann)
    assert _outcomes(done) == [(ann, "resent")]
    clock.set(T0 + 61 * MIN)
    # Every sending of the call refused: the call is refused (409), each with its reason.
    refused = await _resend(desk, incident, bob, status=409)
    assert refused["type"].endswith(":resend-refused")
    assert refused["field"] == "sendings.0"
    assert bob in refused["reason"] and "exceeds the 60-minute threshold" in refused["reason"]
    assert _outcomes(refused) == [(bob, "needs_approval")]
    assert await _messages(context) == before + 1  # only ann's resend
    refusals = await _count(
        context,
        select(func.count())
        .select_from(AuditRecord)
        .where(AuditRecord.action == "incident.resend_refused"),
    )
    assert refusals == 1  # recorded although the call was refused
    await tick(worker)
    bodies = await desk.pull()
    assert [(b["resend_of"], b["recipient"]["email"]) for b in bodies] == [(ann, "ann@example.com")]
    assert bodies[0]["message_id"] == done["results"][0]["resend"] != ann
    assert bodies[0]["scheduled_at"] == "2026-03-02T09:00:00Z"
    original = await desk.message_of("ann@example.com")
    assert (original["id"], original["state"]) == (ann, "failed")  # history stays


async def test_threshold_is_configuration(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    incident, (ann,) = await _failed_incident(desk, worker, "ann@example.com")
    context.settings.resend_threshold_minutes = 30
    clock.set(T0 + 31 * MIN)
    result = await _resend(desk, incident, ann, dry_run=True)
    assert (result["threshold_minutes"], _outcomes(result)) == (30, [(ann, "needs_approval")])


async def test_approvals_owner_or_admin_only_and_once_per_approval(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    incident, (ann, bob) = await _failed_incident(
        desk, worker, "ann@example.com", "bob@example.com"
    )
    clock.set(T0 + 90 * MIN)
    stranger = await _approve(desk, incident, approver_email="someone@example.com")
    assert stranger.status_code == 422
    assert stranger.json()["field"] == "approver_email"
    future = await _approve(desk, incident, approved_at=(T0 + 2 * 60 * MIN).isoformat())
    assert (future.status_code, future.json()["field"]) == (422, "approved_at")
    naive = await _approve(desk, incident, approved_at="2026-03-02T10:00:00")
    assert (naive.status_code, naive.json()["field"]) == (422, "approved_at")
    unknown = await _approve(desk, incident, sendings=["m_nope"])
    assert (unknown.status_code, unknown.json()["field"]) == (422, "sendings")

    admin_ok = await _approve(
        desk, incident, approver_email="ADMIN@Example.com", sendings=[ann], note="go"
    )
    assert admin_ok.status_code == 201, admin_ok.text
    approval = admin_ok.json()
    assert (approval["role"], approval["approver_email"], approval["scope"]) == (
        "admin",
        "admin@example.com",
        "listed",
    )
    assert approval["sendings"] == [ann]

    dry = await _resend(desk, incident, ann, bob, dry_run=True)
    assert _outcomes(dry) == [(ann, "allowed"), (bob, "needs_approval")]
    assert dry["results"][0]["approval"] == approval["id"]
    first = await _resend(desk, incident, ann, bob)
    assert _outcomes(first) == [(ann, "resent"), (bob, "needs_approval")]
    again = await _resend(desk, incident, ann)
    assert _outcomes(again) == [(ann, "already_resent")]
    assert again["results"][0]["resend"] == first["results"][0]["resend"]

    # The owner approves everything impacted: a second resend of ann under that approval.
    clock.advance(MIN)
    owner_ok = await _approve(desk, incident)
    assert owner_ok.status_code == 201, owner_ok.text
    assert (owner_ok.json()["role"], owner_ok.json()["scope"]) == ("owner", "all_impacted")
    assert set(owner_ok.json()["sendings"]) == {ann, bob}
    second = await _resend(desk, incident, ann, bob)
    assert _outcomes(second) == [(ann, "resent"), (bob, "resent")]
    assert second["results"][0]["resend"] != first["results"][0]["resend"]
    listed = (await desk.call("GET", f"/v1/incidents/{incident['id']}/approvals")).json()
    assert [a["id"] for a in listed] == [approval["id"], owner_ok.json()["id"]]
    resends = (await desk.call("GET", f"/v1/incidents/{incident['id']}/resends")).json()
    assert len(resends) == 3
    audited = await _count(
        context,
        select(func.count())
        .select_from(AuditRecord)
        .where(AuditRecord.action == "incident.resend", AuditRecord.incident == incident["id"]),
    )
    assert audited == 3


async def test_concurrent_resends_send_once(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    incident, (ann,) = await _failed_incident(desk, worker, "ann@example.com")
    clock.set(T0 + 10 * MIN)
    results = await asyncio.gather(*(_resend(desk, incident, ann) for _ in range(4)))
    outcomes = sorted(r["results"][0]["outcome"] for r in results)
    assert outcomes == ["already_resent", "already_resent", "already_resent", "resent"]
    assert len({r["results"][0]["resend"] for r in results}) == 1
    copies = await _count(
        context, select(func.count()).select_from(Message).where(Message.resend_of == ann)
    )
    assert copies == 1
    assert await _count(context, select(func.count()).select_from(IncidentResend)) == 1
    await tick(worker)
    assert len(await desk.pull()) == 1


async def test_not_resendable_reasons(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    incident, (ann,) = await _failed_incident(desk, worker, "ann@example.com")
    await desk.post_contacts("sent@example.com")
    await tick(worker)
    sent = (await desk.message_of("sent@example.com"))["id"]
    clock.set(T0 + 5 * MIN)
    later = await desk.incident(title="Later")  # starts now: ann was scheduled before it
    result = await _resend(desk, incident, "m_unknown", sent, ann, dry_run=True, account="other")
    reasons = {r["sending"]: (r["outcome"], r["reason"]) for r in result["results"]}
    assert reasons["m_unknown"] == ("not_resendable", "unknown sending")
    assert reasons[sent][0] == "not_resendable" and "another account" in reasons[sent][1]
    result = await _resend(desk, incident, sent, dry_run=True)
    assert result["results"][0]["outcome"] == "not_resendable"
    assert "state is 'sent'" in result["results"][0]["reason"]
    outside = await _resend(desk, later, ann, dry_run=True)
    assert outside["results"][0]["outcome"] == "not_resendable"
    assert "time range" in outside["results"][0]["reason"]
    assert result["counts"] == {"not_resendable": 1}
    before = await _messages(context)
    real = await _resend(desk, incident, "m_unknown", sent, status=409)
    assert [e["field"] for e in real["errors"]] == ["sendings.0", "sendings.1"]
    assert real["counts"] == {"not_resendable": 2}
    assert await _messages(context) == before
    many = await _resend(desk, incident, *(f"m_nope{n}" for n in range(7)), status=409)
    assert len(many["errors"]) == 7 and many["detail"].endswith("and 2 more (see errors)")


async def test_resend_goes_through_the_pipeline_again(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    incident, (ann,) = await _failed_incident(desk, worker, "ann@example.com")
    event = await desk.client.post(
        "/v1/accounts/acme/events",
        headers=desk.admin,
        json={"type": "unsubscribe", "channel": "email", "address": "ann@example.com"},
    )
    assert event.status_code in (200, 201, 202), event.text
    clock.set(T0 + 5 * MIN)
    result = await _resend(desk, incident, ann)
    assert _outcomes(result) == [(ann, "resent")]
    await tick(worker)
    assert await desk.pull() == []
    async with context.sessions() as session:
        copy = await session.get(Message, result["results"][0]["resend"])
    assert copy is not None
    assert (copy.state, copy.reason, copy.resend_of) == ("suppressed", "unsubscribed", ann)


async def test_delayed_original_is_withdrawn_and_goes_out_once(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    await desk.setup()
    incident = await desk.incident(started_at=(T0 - MIN).isoformat())
    await desk.post_contacts("ann@example.com")  # nobody decides it in time
    clock.set(T0 + 16 * MIN)
    await worker.maintain()
    delayed = await desk.message_of("ann@example.com")
    assert (delayed["state"], delayed["reason"]) == ("delayed", "not_decided_in_time")
    page = (await desk.call("GET", f"/v1/incidents/{incident['id']}/impacted-sendings")).json()
    assert [s["sending"] for s in page["accounts"][0]["sendings"]] == [delayed["id"]]

    result = await _resend(desk, incident, delayed["id"])
    assert _outcomes(result) == [(delayed["id"], "resent")]
    await tick(worker)
    bodies = await desk.pull()
    assert [b["resend_of"] for b in bodies] == [delayed["id"]]
    original = await desk.message_of("ann@example.com")
    assert (original["state"], original["rule"], original["reason"]) == (
        "suppressed",
        "incident",
        "superseded_by_resend",
    )
    clock.advance(timedelta(hours=1))
    await tick(worker)
    assert await desk.pull() == []
    page = (await desk.call("GET", f"/v1/incidents/{incident['id']}/impacted-sendings")).json()
    listed = page["accounts"][0]["sendings"]
    assert [(s["sending"], s["resent_as"]) for s in listed] == [
        (delayed["id"], [result["results"][0]["resend"]])
    ]
