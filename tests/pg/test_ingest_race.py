"""Contact files racing on PostgreSQL (R-INV-1, R-INV-2).

Files that all contain the same person are posted at the same time, through one ASGI app
(one engine, one connection per request) and through two app instances with engines of
their own. Whatever the interleaving, exactly one invite may hold the person's fatigue
rule 1 lock, every upload must succeed, and every row posted must become an invite. Each
race is repeated with fresh people so that a lost race is likely to show.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.api.app import create_app
from dispatch_engine.context import AppContext, build_context
from dispatch_engine.ingest import service
from dispatch_engine.models import Invite
from dispatch_engine.observability import metrics
from dispatch_engine.security.hashing import keyed_hash
from dispatch_engine.store import ingest as store_ingest
from tests.conftest import create_policy, make_settings, setup_account, templates_for

ROUNDS = 5
FILLER = 30  # other people in every file, so each transaction stays open a little while


@pytest.fixture
def pg_only(context: AppContext) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("racing transactions need PostgreSQL")


@pytest.fixture
async def second_client(
    pg_only: None, context: AppContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Another app instance on the same database with an engine (and pool) of its own."""
    other = build_context(
        make_settings(context.settings.database_url, tmp_path / "second"), context.clock
    )
    assert other.engine is not context.engine
    app = create_app(other.settings, context=other)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://second"
        ) as http:
            yield http
    finally:
        await other.aclose()


async def make_dispatch(
    client: httpx.AsyncClient, admin: dict[str, str], policy: dict[str, Any], questionnaire: str
) -> str:
    response = await client.post(
        "/v1/accounts/acme/dispatches",
        headers=admin,
        json={
            "questionnaire_id": questionnaire,
            "policy_id": policy["id"],
            "token_validity": "P14D",
            "message_templates": templates_for(policy),
        },
    )
    assert response.status_code == 201, response.text
    dispatch_id: str = response.json()["id"]
    return dispatch_id


def racing_file(round_no: int, file_no: int, email: str) -> tuple[bytes, int]:
    """A CSV with the shared person at a different place in every file; (body, rows)."""
    lines = [
        f"filler-{round_no}-{file_no}-{k}@example.com,x-{round_no}-{file_no}-{k}"
        for k in range(FILLER)
    ]
    lines.insert((file_no * 7) % FILLER, f"{email},shared-{round_no}-{file_no}")
    return ("email,external_id\n" + "\n".join(lines) + "\n").encode(), len(lines)


async def holders_of(context: AppContext, policy_id: str, email: str) -> tuple[int, int]:
    """(invites, lock holders) of one person under a policy."""
    uuid_hash = keyed_hash(context.hasher, email)
    async with context.sessions() as session:
        rows = await session.execute(
            select(
                func.count(),
                func.count(Invite.fatigue_lock),
            ).where(Invite.policy_id == policy_id, Invite.uuid_hash == uuid_hash)
        )
        total, holders = rows.one()
    return int(total), int(holders)


async def invite_count(context: AppContext, dispatch_ids: list[str]) -> int:
    async with context.sessions() as session:
        query = select(func.count()).select_from(Invite).where(Invite.dispatch_id.in_(dispatch_ids))
        return int((await session.execute(query)).scalar_one())


async def race(
    context: AppContext,
    clients: list[httpx.AsyncClient],
    admin: dict[str, str],
    policy_id: str,
    dispatch_ids: list[str],
    files: int,
    tag: str,
) -> None:
    """ROUNDS races of `files` uploads of one person each; checks every round."""
    expected = await invite_count(context, dispatch_ids)
    for round_no in range(ROUNDS):
        email = f"racer-{tag}-{round_no}@example.com"
        bodies = [racing_file(round_no, f, email) for f in range(files)]
        responses = await asyncio.gather(
            *(
                clients[f % len(clients)].post(
                    f"/v1/accounts/acme/dispatches/{dispatch_ids[f % len(dispatch_ids)]}/contacts",
                    headers={**admin, "Content-Type": "text/csv"},
                    content=body,
                )
                for f, (body, _) in enumerate(bodies)
            )
        )
        for response, (_, rows) in zip(responses, bodies, strict=True):
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["status"] == "completed"
            assert body["counts"] == {
                "rows": rows,
                "accepted": rows,
                "rejected": 0,
                "duplicates": 0,
            }
        expected += sum(rows for _, rows in bodies)
        assert await invite_count(context, dispatch_ids) == expected
        total, holders = await holders_of(context, policy_id, email)
        assert total == files, f"round {round_no}"
        assert holders == 1, f"round {round_no}: {holders} invites hold {email}'s lock"
        for f in range(files):
            assert await holders_of(context, policy_id, f"filler-{round_no}-{f}-0@example.com") == (
                1,
                1,
            )


@pytest.fixture
async def race_setup(
    pg_only: None, client: httpx.AsyncClient, admin: dict[str, str]
) -> tuple[str, list[str]]:
    await setup_account(client, admin)
    policy = await create_policy(client, admin)
    dispatches = [
        await make_dispatch(client, admin, policy, "q-race-1"),
        await make_dispatch(client, admin, policy, "q-race-2"),
    ]
    return policy["id"], dispatches


@pytest.mark.parametrize("files", [2, 5])
async def test_racing_files_through_one_app_give_one_lock_holder(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
    files: int,
) -> None:
    policy_id, dispatches = race_setup
    await race(context, [client], admin, policy_id, dispatches[:1], files, f"one-{files}")


@pytest.mark.parametrize("files", [2, 5])
async def test_racing_files_through_two_apps_give_one_lock_holder(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
    files: int,
) -> None:
    policy_id, dispatches = race_setup
    await race(
        context, [client, second_client], admin, policy_id, dispatches, files, f"two-{files}"
    )


async def test_racing_files_with_the_same_external_id_give_one_invite(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
) -> None:
    _, dispatches = race_setup
    clients = [client, second_client]
    for round_no in range(ROUNDS):
        external_id = f"same-{round_no}"
        responses = await asyncio.gather(
            *(
                clients[f % 2].post(
                    f"/v1/accounts/acme/dispatches/{dispatches[0]}/contacts",
                    headers={**admin, "Content-Type": "text/csv"},
                    content=(
                        f"email,external_id\nsame-{round_no}-{f}@example.com,{external_id}\n"
                    ).encode(),
                )
                for f in range(4)
            )
        )
        assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
        counts = [r.json()["counts"] for r in responses]
        assert sum(c["accepted"] for c in counts) == 1
        assert sum(c["duplicates"] for c in counts) == 3
        found = await client.get(
            "/v1/accounts/acme/invites",
            headers=admin,
            params={"external_id": external_id, "dispatch": dispatches[0]},
        )
        assert len(found.json()) == 1


async def test_racing_replays_of_one_idempotency_key_create_one_batch(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
) -> None:
    _, dispatches = race_setup
    clients = [client, second_client]
    for round_no in range(ROUNDS):
        body, rows = racing_file(round_no, 0, f"idem-{round_no}@example.com")
        before = await invite_count(context, dispatches)
        responses = await asyncio.gather(
            *(
                clients[f % 2].post(
                    f"/v1/accounts/acme/dispatches/{dispatches[0]}/contacts",
                    headers={
                        **admin,
                        "Content-Type": "text/csv",
                        "Idempotency-Key": f"race-{round_no}",
                    },
                    content=body,
                )
                for f in range(4)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {202, 409}, [r.text for r in responses]
        fresh = [
            r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r.headers
        ]
        assert len(fresh) == 1
        for response in responses:
            if response.status_code == 202:
                assert response.json() == fresh[0].json()
            else:
                assert response.json()["type"].endswith(":idempotency-in-flight")
        assert await invite_count(context, dispatches) == before + rows


def hold_first_calls(monkeypatch: pytest.MonkeyPatch, name: str, parties: int) -> list[int]:
    """Make the first `parties` calls of `service.<name>` wait for each other after looking
    at the database, so every racer decides before any of them inserts (a lost race, every
    time). Later calls (the retries) pass straight through. Returns the call counter."""
    original = getattr(service, name)
    barrier = asyncio.Barrier(parties)
    calls = [0]

    async def held(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        result = await original(*args, **kwargs)
        if calls[0] <= parties:
            await asyncio.wait_for(barrier.wait(), 10)
        return result

    monkeypatch.setattr(service, name, held)
    return calls


@pytest.mark.parametrize("files", [2, 3])
async def test_a_forced_lost_lock_race_is_retried_not_doubled(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    files: int,
) -> None:
    policy_id, dispatches = race_setup
    calls = hold_first_calls(monkeypatch, "_assign_locks", files)
    email = "forced@example.com"
    clients = [client, second_client]
    responses = await asyncio.gather(
        *(
            clients[f % 2].post(
                f"/v1/accounts/acme/dispatches/{dispatches[f % 2]}/contacts",
                headers={**admin, "Content-Type": "text/csv"},
                content=f"email,external_id\n{email},forced-{f}\n".encode(),
            )
            for f in range(files)
        )
    )
    assert [r.status_code for r in responses] == [202] * files, [r.text for r in responses]
    assert all(r.json()["counts"]["accepted"] == 1 for r in responses)
    assert calls[0] == files + (files - 1)  # every loser looked again once
    assert await holders_of(context, policy_id, email) == (files, 1)


async def test_a_forced_lost_external_id_race_counts_a_duplicate(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, dispatches = race_setup
    calls = hold_first_calls(monkeypatch, "_drop_known_external_ids", 2)
    responses = await asyncio.gather(
        *(
            http.post(
                f"/v1/accounts/acme/dispatches/{dispatches[0]}/contacts",
                headers={**admin, "Content-Type": "text/csv"},
                content=f"email,external_id\nforced-{n}@example.com,same-id\n".encode(),
            )
            for n, http in enumerate([client, second_client])
        )
    )
    assert [r.status_code for r in responses] == [202, 202], [r.text for r in responses]
    counts = sorted(
        (r.json()["counts"]["accepted"], r.json()["counts"]["duplicates"]) for r in responses
    )
    assert counts == [(0, 1), (1, 0)]
    assert calls[0] == 3
    assert await invite_count(context, dispatches[:1]) == 1


OVERLAP_PEOPLE = 200


def overlapping_file(people: list[str], seed: int) -> bytes:
    """The same people in a shuffled order (the reverse for seed 1): without one global
    lock order two such files deadlock in their COPY."""
    order = list(people)
    if seed == 1:
        order.reverse()
    elif seed > 1:
        random.Random(seed).shuffle(order)
    return ("email,external_id\n" + "".join(f"{e},{e}\n" for e in order)).encode()


@pytest.mark.parametrize("files", [2, 3, 4])
async def test_concurrent_overlapping_uploads_never_fail_and_give_one_holder_each(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
    files: int,
) -> None:
    """Issue 18.1: files of the same people in other orders, posted at the same moment to
    the dispatches of one policy, all answer 202, and each person holds one lock."""
    policy_id, _ = race_setup
    policy = (await client.get(f"/v1/accounts/acme/policies/{policy_id}", headers=admin)).json()
    extra = [await make_dispatch(client, admin, policy, f"q-over-{n}") for n in range(files)]
    clients = [client, second_client]
    for round_no in range(3):
        people = [f"o{files}-{round_no}-{k}@example.com" for k in range(OVERLAP_PEOPLE)]
        responses = await asyncio.gather(
            *(
                clients[f % 2].post(
                    f"/v1/accounts/acme/dispatches/{extra[f]}/contacts",
                    headers={**admin, "Content-Type": "text/csv"},
                    content=overlapping_file(people, f),
                )
                for f in range(files)
            )
        )
        assert [r.status_code for r in responses] == [202] * files, [
            r.text[:300] for r in responses
        ]
        for response in responses:
            assert response.json()["counts"]["accepted"] == OVERLAP_PEOPLE
        async with context.sessions() as session:
            rows = (
                await session.execute(
                    select(Invite.uuid_hash, func.count(), func.count(Invite.fatigue_lock))
                    .where(Invite.policy_id == policy_id, Invite.dispatch_id.in_(extra))
                    .group_by(Invite.uuid_hash)
                )
            ).all()
        wanted = {keyed_hash(context.hasher, e) for e in people}
        mine = {h: (total, held) for h, total, held in rows if h in wanted}
        assert len(mine) == OVERLAP_PEOPLE
        assert set(mine.values()) == {(files, 1)}, round_no


async def test_a_deadlock_between_two_chunks_is_retried_and_counted(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    race_setup: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the lock order (file order kept), two chunks that each inserted half their
    invites before the other goes on wait on each other: PostgreSQL aborts one, which is
    run again (the client sees two 202s) and counted."""
    policy_id, dispatches = race_setup
    monkeypatch.setattr(service, "_by_id", lambda rows: rows)
    original = store_ingest.insert_rows
    barrier = asyncio.Barrier(2)
    calls = [0]

    async def in_two_halves(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
        if table.name != "invites" or calls[0] >= 2:
            return await original(session, table, rows)
        calls[0] += 1
        half = len(rows) // 2
        await original(session, table, rows[:half])
        await asyncio.wait_for(barrier.wait(), 10)
        await original(session, table, rows[half:])

    monkeypatch.setattr(store_ingest, "insert_rows", in_two_halves)
    retries = metrics.TRANSACTION_RETRIES.labels("ingest_chunk", "deadlock")
    before = retries._value.get()
    people = [f"dl-{k}@example.com" for k in range(OVERLAP_PEOPLE)]
    responses = await asyncio.gather(
        *(
            client.post(
                f"/v1/accounts/acme/dispatches/{dispatches[f]}/contacts",
                headers={**admin, "Content-Type": "text/csv"},
                content=overlapping_file(people, f),
            )
            for f in range(2)
        )
    )
    assert [r.status_code for r in responses] == [202, 202], [r.text[:300] for r in responses]
    assert retries._value.get() == before + 1
    assert await holders_of(context, policy_id, people[0]) == (2, 1)
    assert await holders_of(context, policy_id, people[-1]) == (2, 1)
