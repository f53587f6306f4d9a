"""Controlling invites end to end: events (R-INV-3). A response stops every further
message (a replay is harmless), unknown or foreign tokens are 404, unsubscribes by
address or by token block a channel for the account only, malformed events are 422
problems that do not echo the address, and an operator resubscribe is audited.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Unsubscribe
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import ANN, BOB, EMAIL, Api, contact, is_problem, outcomes, recipients, tick, utc

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
