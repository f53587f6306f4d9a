"""The key-rotation service below the CLI (SQLite and PostgreSQL): `carry_forward_unsubscribes`
and `carry_forward_fatigue` (what ingest calls for every chunk, so a person known only under an
old HMAC key is still recognised), and the races `rotate_keys` is built to survive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.db.conditional import update_unchanged
from dispatch_engine.ingest.carry_forward import (
    CarriedFatigue,
    LockScope,
    carry_forward_fatigue,
    carry_forward_unsubscribes,
)
from dispatch_engine.models import FatigueLedger, Invite, Unsubscribe
from dispatch_engine.models.base import table_of
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.security.hashing import keyed_hash
from dispatch_engine.security.sealing import seal_contact
from dispatch_engine.services.events import address_hashes, block_hashes
from dispatch_engine.services.key_rotation import rotate_keys
from dispatch_engine.store.lookups import load_lock_holders, load_unsubscribes
from tests.conftest import create_policy, empty_database, setup_account
from tests.helpers import (
    ENC_K1,
    ENC_K2_K1,
    MAC_K1,
    MAC_K2_K1,
    NO_FATIGUE,
    ONE_EMAIL,
    api_of,
    context_for,
    first_message,
    tick,
)

EVE = "eve@example.com"
SCOPE = LockScope("pol_a", 2, False)


@pytest.fixture
async def rings(
    migrated_url: str, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[tuple[AppContext, AppContext]]:
    """The same store seen before (ring `k1`) and after (ring `k2,k1`) the rotation."""
    old = context_for(migrated_url, tmp_path, ENC_K1, MAC_K1, clock)
    new = context_for(migrated_url, tmp_path, ENC_K2_K1, MAC_K2_K1, clock)
    await empty_database(old)
    yield old, new
    await old.aclose()
    await new.aclose()


def k1(context: AppContext, value: str) -> str:
    return f"k1:{context.hasher.digest(value, 'k1')}"


async def add_invite(
    context: AppContext,
    invite_id: str,
    uuid_hash: str,
    lock: str | None,
    *,
    email: str | None = None,
) -> None:
    """An invite row as ingest writes it; with ``email``, live (contact kept) and hashed."""
    now = context.clock.now()
    contact = None
    if email is not None:
        contact = seal_contact(context.cipher, invite_id, email=email, mobile=None, attributes={})
    async with context.sessions() as session, session.begin():
        await session.execute(
            insert(table_of(Invite)).values(
                id=invite_id,
                account_id="acme",
                dispatch_id="dsp_a",
                policy_id=SCOPE.policy_id,
                questionnaire_id="q1",
                token=f"token-{invite_id}",
                uuid_hash=uuid_hash,
                fatigue_epoch=SCOPE.fatigue_epoch,
                fatigue_lock=lock,
                contact=contact,
                email_hash=keyed_hash(context.hasher, email) if email else None,
                state="completed",
                created_at=now,
                received_at=now,
                valid_until=now,
            )
        )


async def add_sends(context: AppContext, *sends: tuple[str, str]) -> None:
    """Fatigue ledger rows: (invite id, uuid hash)."""
    now = context.clock.now()
    async with context.sessions() as session, session.begin():
        await session.execute(
            insert(table_of(FatigueLedger)),
            [
                {
                    "account_id": "acme",
                    "policy_id": SCOPE.policy_id,
                    "fatigue_epoch": SCOPE.fatigue_epoch,
                    "questionnaire_id": "q1",
                    "invite_id": invite_id,
                    "uuid_hash": uuid_hash,
                    "sandbox": False,
                    "sent_at": now,
                }
                for invite_id, uuid_hash in sends
            ],
        )


async def rows_of(context: AppContext, model: Any) -> list[Any]:
    async with context.sessions() as session:
        return list((await session.execute(select(model))).scalars())


async def test_unsubscribes_under_an_old_key_are_copied_to_the_current_key_once(
    rings: tuple[AppContext, AppContext],
) -> None:
    old, new = rings
    async with old.sessions() as session, session.begin():
        now = old.clock.now()
        # as the events API records them: the address's hashes under the keys of the time
        fay_then = address_hashes(old, "email", "Fay@Example.com")
        mobile_then = address_hashes(old, "sms", "+33 6 12 34 56 78")
        await block_hashes(session, "acme", "email", fay_then, now, "event")
        await block_hashes(session, "globex", "sms", mobile_then, now, "operator")
    fay = ("acme", "email", keyed_hash(new.hasher, "fay@example.com"))
    mobile = ("globex", "sms", keyed_hash(new.hasher, "+33612345678"))

    async with new.sessions() as session, session.begin():
        assert await load_unsubscribes(session, {fay, mobile}) == set()  # the gap
        added = await carry_forward_unsubscribes(
            session, new.hasher, ["fay@example.com", "+33612345678", None, "nobody@example.com"]
        )
    assert added == 2

    stored = {
        (u.account_id, u.channel, u.address_hash): (u.created_at, u.source)
        for u in await rows_of(new, Unsubscribe)
    }
    assert len(stored) == 4  # the k1 rows stay
    assert stored[fay] == stored[("acme", "email", k1(new, "fay@example.com"))]
    assert stored[mobile] == stored[("globex", "sms", k1(new, "+33612345678"))]

    async with new.sessions() as session, session.begin():
        assert await load_unsubscribes(session, {fay, mobile}) == {fay, mobile}
        again = await carry_forward_unsubscribes(session, new.hasher, ["fay@example.com"])
    assert again == 0


async def test_with_a_one_key_ring_nothing_is_queried(
    rings: tuple[AppContext, AppContext],
) -> None:
    old, _ = rings
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(old.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with old.sessions() as session, session.begin():
            assert await carry_forward_unsubscribes(session, old.hasher, [EVE]) == 0
            assert (
                await carry_forward_fatigue(session, old.hasher, [EVE], lock_scope=SCOPE)
                == CarriedFatigue()
            )
    finally:
        event.remove(old.engine.sync_engine, "before_cursor_execute", record)
    assert [s for s in statements if not s.startswith("BEGIN")] == []


async def test_fatigue_history_and_the_pending_token_lock_move_to_the_current_key(
    rings: tuple[AppContext, AppContext],
) -> None:
    old, new = rings
    eve_k1, eve_k2 = k1(new, EVE), keyed_hash(new.hasher, EVE)
    other_k1 = k1(new, "someone-else")
    await add_invite(old, "inv_holder", eve_k1, fatigue_lock_key("pol_a", 2, False, eve_k1))
    other_scope_lock = fatigue_lock_key("pol_b", 1, False, eve_k1)
    await add_invite(old, "inv_other_policy", eve_k1, other_scope_lock)
    await add_sends(old, ("inv_holder", eve_k1), ("inv_old", eve_k1), ("inv_x", other_k1))

    async with new.sessions() as session, session.begin():
        carried = await carry_forward_fatigue(
            session, new.hasher, [EVE, None, EVE], lock_scope=SCOPE
        )
    assert carried == CarriedFatigue(ledger_rows=2, locks=1)

    ledger = sorted((r.invite_id, r.uuid_hash) for r in await rows_of(new, FatigueLedger))
    assert ledger == [("inv_holder", eve_k2), ("inv_old", eve_k2), ("inv_x", other_k1)]
    invites = {i.id: i for i in await rows_of(new, Invite)}
    new_lock = fatigue_lock_key("pol_a", 2, False, eve_k2)
    assert (invites["inv_holder"].fatigue_lock, invites["inv_holder"].uuid_hash) == (
        new_lock,
        eve_k2,
    )
    # Only the ingest's own policy/epoch/sandbox is looked at.
    assert invites["inv_other_policy"].fatigue_lock == other_scope_lock
    async with new.sessions() as session:
        # what ingest (_assign_locks) and the worker look up for a fresh invite of Eve
        assert set(await load_lock_holders(session, {new_lock})) == {new_lock}

    async with new.sessions() as session, session.begin():
        again = await carry_forward_fatigue(session, new.hasher, [EVE], lock_scope=SCOPE)
    assert again == CarriedFatigue()


async def test_a_lock_already_held_under_the_current_key_wins(
    rings: tuple[AppContext, AppContext],
) -> None:
    old, new = rings
    eve_k1, eve_k2 = k1(new, EVE), keyed_hash(new.hasher, EVE)
    new_lock = fatigue_lock_key("pol_a", 2, False, eve_k2)
    await add_invite(old, "inv_before", eve_k1, fatigue_lock_key("pol_a", 2, False, eve_k1))
    await add_invite(new, "inv_after", eve_k2, new_lock)

    async with new.sessions() as session, session.begin():
        carried = await carry_forward_fatigue(session, new.hasher, [EVE], lock_scope=SCOPE)
    assert carried == CarriedFatigue(ledger_rows=0, locks=1)
    invites = {i.id: i for i in await rows_of(new, Invite)}
    assert (invites["inv_before"].fatigue_lock, invites["inv_before"].uuid_hash) == (None, eve_k2)
    assert invites["inv_after"].fatigue_lock == new_lock


async def test_a_carried_unsubscribe_blocks_a_fresh_invite_of_someone_never_ingested(
    rings: tuple[AppContext, AppContext],
) -> None:
    old, new = rings
    async with api_of(old) as api:
        await setup_account(api.client, api.headers, "acme")
        await api.call(
            "POST",
            "/v1/accounts/acme/events",
            json={"type": "unsubscribe", "channel": "email", "address": "fay@example.com"},
        )
    async with api_of(new) as api:
        policy = await create_policy(api.client, api.headers, lineup=ONE_EMAIL, fatigue=NO_FATIGUE)
        dispatch = await api.dispatch(policy, "q1", "P30D")
        worker = Worker(new)
        try:
            # Ingest carries the k1 unsubscribe to k2 in the chunk's own transaction.
            await api.post(dispatch, {"email": "fay@example.com", "external_id": "fay-1"})
            await tick(worker)
            assert await first_message(api, "fay-1") == ("suppressed", "unsubscribed")
            async with new.sessions() as session, session.begin():
                again = await carry_forward_unsubscribes(session, new.hasher, ["fay@example.com"])
            assert again == 0  # already carried
        finally:
            await worker.shutdown(0)


# --- races rotate_keys is built to survive ------------------------------------------------


async def test_a_row_changed_by_another_writer_is_left_to_it(
    rings: tuple[AppContext, AppContext],
) -> None:
    old, new = rings
    eve_k1 = k1(new, EVE)
    await add_invite(old, "inv_a", eve_k1, "lock-a")
    await add_invite(old, "inv_b", eve_k1, "lock-b")
    async with new.sessions() as session, session.begin():
        done = await update_unchanged(
            session,
            table_of(Invite),
            "id",
            [
                {"k": "inv_a", "new_fatigue_lock": "lock-a2", "old_fatigue_lock": "lock-a"},
                # released meanwhile by a worker: our old value no longer holds
                {"k": "inv_b", "new_fatigue_lock": "lock-b2", "old_fatigue_lock": "stale"},
            ],
            new=["fatigue_lock"],
            old=["fatigue_lock"],
        )
    assert done == {"inv_a"}
    locks = {i.id: i.fatigue_lock for i in await rows_of(new, Invite)}
    assert locks == {"inv_a": "lock-a2", "inv_b": "lock-b"}


async def test_rotation_releases_a_lock_taken_meanwhile_under_the_new_key(
    rings: tuple[AppContext, AppContext],
) -> None:
    """Ann's live invite holds rule 1 under k1; after the restart a second invite of Ann,
    ingested under k2, took the k2 lock. One holder remains: the k2 one."""
    old, new = rings
    ann = "ann@example.com"
    await add_invite(
        old,
        "inv_before",
        k1(new, ann),
        fatigue_lock_key("pol_a", 2, False, k1(new, ann)),
        email=ann,
    )
    new_lock = fatigue_lock_key("pol_a", 2, False, keyed_hash(new.hasher, ann))
    await add_invite(new, "inv_after", keyed_hash(new.hasher, ann), new_lock, email=ann)

    report = await rotate_keys(new.engine, new.cipher, new.hasher)
    invites = {i.id: i for i in await rows_of(new, Invite)}
    before = invites["inv_before"]
    assert (before.uuid_hash, before.email_hash, before.fatigue_lock) == (
        keyed_hash(new.hasher, ann),
        keyed_hash(new.hasher, ann),
        None,
    )
    assert invites["inv_after"].fatigue_lock == new_lock
    assert report.column("invites.fatigue_lock").changed == 1
    assert report.skipped == 0 and report.encryption_remaining == 0


async def test_rotation_repairs_what_a_worker_wrote_from_an_invite_it_had_read_before(
    rings: tuple[AppContext, AppContext],
) -> None:
    """The worker read Cat's invite under k1, the rotation moved it to k2, then the worker
    wrote its first send: a k1 lock and a k1 ledger row on a k2 invite."""
    _, new = rings
    cat = "cat@example.com"
    cat_k1, cat_k2 = k1(new, cat), keyed_hash(new.hasher, cat)
    await add_invite(new, "inv_cat", cat_k2, fatigue_lock_key("pol_a", 2, False, cat_k1), email=cat)
    await add_sends(new, ("inv_cat", cat_k1))

    report = await rotate_keys(new.engine, new.cipher, new.hasher, batch_size=1)
    (invite,) = await rows_of(new, Invite)
    assert invite.fatigue_lock == fatigue_lock_key("pol_a", 2, False, cat_k2)
    assert [r.uuid_hash for r in await rows_of(new, FatigueLedger)] == [cat_k2]
    assert report.column("invites.fatigue_lock").changed == 1
    assert report.column("fatigue_ledger.uuid_hash").changed == 1
    assert report.column("fatigue_ledger.uuid_hash").remaining == 0

    again = await rotate_keys(new.engine, new.cipher, new.hasher)
    assert again.changed == 0


async def test_values_that_cannot_be_moved_are_reported_and_left(
    rings: tuple[AppContext, AppContext],
) -> None:
    """A token under a key no longer in the ring, a hash no stored value reproduces."""
    old, new = rings
    await add_invite(old, "inv_dan", k1(new, "someone-else"), None, email="dan@example.com")
    async with new.sessions() as session, session.begin():
        await session.execute(
            insert(table_of(Invite)).values(
                id="inv_lost",
                account_id="acme",
                dispatch_id="dsp_a",
                policy_id="pol_a",
                questionnaire_id="q1",
                token="token-lost",
                uuid_hash=keyed_hash(new.hasher, "x"),
                contact="k0:AAAA",
                state="active",
                created_at=new.clock.now(),
                received_at=new.clock.now(),
                valid_until=new.clock.now(),
            )
        )
    report = await rotate_keys(new.engine, new.cipher, new.hasher)
    assert report.column("invites.contact").skipped == 1  # inv_lost: unknown key id k0
    assert report.column("invites.contact").remaining == 1
    uuid = report.column("invites.uuid_hash")
    assert (uuid.changed, uuid.skipped, uuid.remaining) == (0, 1, 1)  # inv_dan
    assert report.column("invites.email_hash").changed == 1
    invites = {i.id: i for i in await rows_of(new, Invite)}
    assert invites["inv_dan"].uuid_hash == k1(new, "someone-else")
    assert invites["inv_lost"].contact == "k0:AAAA"
