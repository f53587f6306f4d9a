"""The rule pipeline end to end: claims and leases (R-SCH-1). A claimed message waits for
its lease; a stale claim token writes nothing.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from datetime import timedelta

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.delivery.engine import DeliveryEngine
from dispatch_engine.models import Message
from dispatch_engine.store.messages import claim_due_messages, still_owned
from tests.helpers import ANN, BOB, Api, contact, first, outbox_rows

# --- R-SCH-1: claims and leases -----------------------------------------------------------


async def _message_row(context: AppContext, message_id: str) -> Message:
    async with context.sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None
        return row


async def test_a_claimed_message_waits_for_its_lease(
    api: Api, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Claims")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    message_id = first(await api.invite(dispatch, "ann"))["id"]
    async with context.sessions() as session, session.begin():
        _, ids = await claim_due_messages(
            session, now=clock.now(), limit=10, lease=timedelta(seconds=60)
        )
    assert ids == [message_id]

    engine = DeliveryEngine(context)
    assert (await engine.run_once()).claimed == 0
    clock.advance(timedelta(seconds=59))
    assert (await engine.run_once()).claimed == 0
    assert (await _message_row(context, message_id)).state == "pending"

    clock.advance(timedelta(seconds=2))  # the first claim's lease has expired
    result = await engine.run_once()
    assert (result.claimed, result.outcomes["sent"]) == (1, 1)
    assert (await engine.run_once()).claimed == 0
    assert await outbox_rows(context) == 1
    row = await _message_row(context, message_id)
    assert (row.state, row.claim_token, row.lease_until) == ("sent", None, None)


async def test_a_stale_claim_token_writes_nothing(
    api: Api, clock: FrozenClock, context: AppContext
) -> None:
    policy = await api.policy("Fence")
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"), contact(BOB, "bob"))
    lease = timedelta(seconds=60)
    async with context.sessions() as session, session.begin():
        token_a, ids_a = await claim_due_messages(session, now=clock.now(), limit=10, lease=lease)
    assert len(ids_a) == 2
    clock.advance(lease + timedelta(seconds=1))
    async with context.sessions() as session, session.begin():
        token_b, ids_b = await claim_due_messages(session, now=clock.now(), limit=10, lease=lease)
    assert sorted(ids_b) == sorted(ids_a)
    assert token_a != token_b
    async with context.sessions() as session, session.begin():
        assert await still_owned(session, ids_a, token_a) == set()
        assert await still_owned(session, ids_a, token_b) == set(ids_a)

    # The worker holding token A finishes late: its write-back is fenced off.
    engine = DeliveryEngine(context)
    async with context.sessions() as session, session.begin():
        result = await engine._decide_and_write(session, ids_a, token_a, clock.now(), {})
    assert not result.outcomes
    assert await outbox_rows(context) == 0
    for message_id in ids_a:
        row = await _message_row(context, message_id)
        assert (row.state, row.claim_token) == ("pending", token_b)

    # The holder of token B writes normally, once.
    async with context.sessions() as session, session.begin():
        result = await engine._decide_and_write(session, ids_b, token_b, clock.now(), {})
    assert result.outcomes["sent"] == 2
    assert await outbox_rows(context) == 2
    assert (await engine.run_once()).claimed == 0
