"""The rule pipeline end to end: the queue message and its way out (R-Q-1, R-RUL-2).

Every message matches the queue message contract; the outbox relay puts messages on the
local queue, removes only what the queue acknowledged, and the local queue's visibility
and receive counts behave.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

import jsonschema
from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import LocalQueueMessage, OutboxEntry
from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.schemas.queue_message import SCHEMA_NAME, load_json_schema
from tests.helpers import ANN, BOB, Api, contact, first, outbox_rows, tick

# --- R-Q-1: the queue message -------------------------------------------------------------


async def test_every_queue_message_matches_the_contract(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy(
        "Three",
        [
            {"channel": "email", "delay": "PT0S"},
            {"channel": "email", "delay": "P1D"},
            {"channel": "sms", "delay": "P1D"},
        ],
    )
    dispatch = await api.dispatch(policy, "nps-q1", "P7D")
    await api.post(
        dispatch,
        contact(ANN, "c-ann", first_name="Ann"),
        contact(BOB, "c-bob", attributes={"tier": "gold"}),
    )
    schema = load_json_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    bodies: list[dict[str, Any]] = []
    for _ in range(3):
        await tick(worker)
        batch = await api.pull()
        assert len(batch) == 2
        bodies.extend(batch)
        clock.advance(timedelta(days=1))
    await tick(worker)
    assert await api.pull() == []  # nothing more, and no duplicates

    invites = {ext: await api.invite(dispatch, ext) for ext in ("c-ann", "c-bob")}
    by_invite = {inv["id"]: inv for inv in invites.values()}
    lineup = {m["id"]: m for m in policy["lineup"]}
    assert len({b["message_id"] for b in bodies}) == 6
    for body in bodies:
        errors = sorted(validator.iter_errors(body), key=str)
        assert errors == [], [e.message for e in errors]
        assert body["schema"] == SCHEMA_NAME == "dispatch-engine.invitation/v1"
        assert body["type"] == "invitation"
        invite = by_invite[body["invite_id"]]
        shown = {m["lineup_message_id"]: m for m in invite["messages"]}
        message = shown[body["lineup_message_id"]]
        assert body["message_id"] == message["id"]
        assert message["state"] == "sent"
        assert body["token"] == invite["token"]
        assert body["message_template"] == dispatch["message_templates"][body["lineup_message_id"]]
        assert body["lineup_position"] == lineup[body["lineup_message_id"]]["position"]
        assert body["channel"] == lineup[body["lineup_message_id"]]["channel"]
        assert body["account"] == "acme"
        assert body["dispatch"] == dispatch["id"]
        assert body["questionnaire"] == "nps-q1"
        assert body["sandbox"] is False
        assert body["resend_of"] is None
        person = ANN if invite["external_id"] == "c-ann" else BOB
        expected = (
            {"email": person["email"]}
            if body["channel"] == "email"
            else {"mobile": person["mobile"]}
        )
        assert body["recipient"] == expected
        wanted_attributes = {"first_name": "Ann"} if person is ANN else {"tier": "gold"}
        assert body["attributes"] == wanted_attributes
    for invite in invites.values():
        assert [m["state"] for m in invite["messages"]] == ["sent", "sent", "sent"]
        assert invite["state"] == "completed"


# --- R-RUL-2: outbox relay and the local queue --------------------------------------------


async def test_outbox_relay_and_local_queue_visibility(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Relay")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))

    await worker.deliver()
    assert await api.receive() == []  # marked sent and in the outbox, not on the queue yet
    assert await outbox_rows(context) == 2
    for ext in ("ann", "bob"):
        assert first(await api.invite(dispatch, ext))["state"] == "sent"

    await worker.relay_outbox()
    await worker.relay_outbox()  # relaying again adds nothing
    async with context.sessions() as session:
        local = (
            await session.execute(select(func.count()).select_from(LocalQueueMessage))
        ).scalar_one()
    # Acknowledged by the queue, so gone from the outbox (no copy of the address stays).
    assert (await outbox_rows(context), local) == (0, 2)

    received = await api.receive(visibility=30)
    assert len(received) == 2
    first_count = received[0][
        "receive_count"
    ]  # exact values: see test_local_queue_receive_count_counts_deliveries
    assert {m["message_id"] for m in received} == {m["body"]["message_id"] for m in received}
    clock.advance(timedelta(seconds=29))
    assert await api.receive(visibility=30) == []  # still invisible

    clock.advance(timedelta(seconds=2))  # past the visibility timeout: they come back
    again = await api.receive(visibility=30)
    assert sorted(m["message_id"] for m in again) == sorted(m["message_id"] for m in received)
    assert [m["receive_count"] for m in again] == [first_count + 1] * 2

    stale = [m["receipt"] for m in received]
    result = await api.ack(stale)
    assert result == {"acked": 0, "unknown": stale}
    current = [m["receipt"] for m in again]
    assert await api.ack(current) == {"acked": 2, "unknown": []}
    assert await api.ack(current) == {"acked": 0, "unknown": current}
    clock.advance(timedelta(minutes=5))
    assert await api.receive() == []


class _RefusingSender:
    """The queue refuses some messages: `retry` ones for now, `never` ones for good."""

    def __init__(self, retry: set[str], never: set[str]) -> None:
        self.retry, self.never = retry, never
        self.seen: list[str] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        self.seen.extend(m.message_id for m in messages)
        return [
            SendFailure(m.message_id, "ServiceUnavailable", retryable=m.message_id in self.retry)
            for m in messages
            if m.message_id in self.retry | self.never
        ]

    async def probe(self, body: bytes, message_id: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


async def test_relay_removes_only_what_the_queue_acknowledged(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext, monkeypatch: Any
) -> None:
    policy = await api.policy("Acks")
    dispatch = await api.dispatch(policy)
    cat = {"email": "cat@example.com"}
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"), contact(cat, "cat"))
    await worker.deliver()
    ids = {ext: first(await api.invite(dispatch, ext))["id"] for ext in ("ann", "bob", "cat")}
    sender = _RefusingSender(retry={ids["bob"]}, never={ids["cat"]})

    async def refusing(integration: Any) -> _RefusingSender:
        return sender

    monkeypatch.setattr(worker.senders, "get", refusing)
    await worker.relay.run_once()
    assert sorted(sender.seen) == sorted(ids.values())
    async with context.sessions() as session:
        rows = {
            row.message_id: row for row in (await session.execute(select(OutboxEntry))).scalars()
        }
    assert set(rows) == {ids["bob"], ids["cat"]}  # Ann's row went with the acknowledgement
    retried, gave_up = rows[ids["bob"]], rows[ids["cat"]]
    assert (retried.attempts, retried.failed_at, retried.last_error) == (
        1,
        None,
        "ServiceUnavailable",
    )
    assert retried.next_attempt_at.replace(tzinfo=UTC) >= clock.now()
    assert (gave_up.attempts, gave_up.last_error) == (1, "ServiceUnavailable")
    assert gave_up.failed_at is not None
    assert first(await api.invite(dispatch, "cat"))["state"] == "failed"
    # The decision trace keeps a slug, not the queue's error text.
    cat_id = (await api.invite(dispatch, "cat"))["id"]
    trace = first(await api.call("GET", f"{api.base}/invites/{cat_id}"))["decisions"]
    assert [(d["kind"], d["rule"], d["reason"]) for d in trace] == [
        ("sent", None, None),
        ("failed", "queue", "push_failed"),
    ]
    assert trace[1]["worker"] == context.settings.worker_id

    sender.retry.clear()
    clock.advance(timedelta(minutes=10))  # past Bob's backoff
    await worker.relay.run_once()
    assert await outbox_rows(context, (await api.invite(dispatch, "bob"))["id"]) == 0
    assert await outbox_rows(context) == 1  # Cat's failed row stays, for the operators
    assert sender.seen.count(ids["bob"]) == 2 and sender.seen.count(ids["cat"]) == 1


async def test_local_queue_receive_count_counts_deliveries(
    api: Api, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Count")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    counts = []
    for _ in range(2):
        received = await api.receive(visibility=30)
        async with context.sessions() as session:
            stored = (await session.execute(select(LocalQueueMessage.receive_count))).scalar_one()
        counts.append((received[0]["receive_count"], stored))
        clock.advance(timedelta(seconds=31))
    assert counts == [(1, 1), (2, 2)]
