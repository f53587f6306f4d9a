"""Idempotency-Key on contact uploads (§8 contacts).

A replay gives the first answer and creates nothing; keys are per account, released when
the dispatch is unknown, 409 while the first request is in flight, and a failed upload
replays as the same problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from dispatch_engine.context import AppContext
from dispatch_engine.models import Invite, Message
from tests.conftest import setup_account
from tests.helpers import (
    ACME,
    CSV,
    assert_problem,
    count_rows,
    counts,
    get_batch,
    make_dispatch,
    post_csv,
    post_json,
)

# --- Idempotency-Key ------------------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer_and_creates_nothing(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    csv = "email,external_id\nann@example.com,c-1\nbad,c-2\nbob@example.com,\n"
    key = {"Idempotency-Key": "upload-2026-03-02"}
    first = await post_csv(client, acme, dispatch["id"], csv, headers=key)
    assert first.status_code == 202, first.text
    assert first.headers.get("Idempotent-Replayed") is None
    assert first.json()["counts"] == counts(3, 2, rejected=1)
    assert await count_rows(context, Invite, dispatch["id"]) == 2
    assert await count_rows(context, Message, dispatch["id"]) == 2

    for _ in range(2):
        replay = await post_csv(client, acme, dispatch["id"], csv, headers=key)
        assert replay.status_code == 202, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == first.json()
    assert await count_rows(context, Invite, dispatch["id"]) == 2
    assert await count_rows(context, Message, dispatch["id"]) == 2
    assert (await get_batch(client, acme, first.json()["batch"]))["counts"] == counts(3, 2, 1)

    other = await post_csv(client, acme, dispatch["id"], csv + "cy@example.com,c-3\n", headers=key)
    assert_problem(other, 422, "idempotency-key-reused")
    as_json = await post_json(
        client, acme, dispatch["id"], [{"email": "cy@example.com"}], headers=key
    )
    assert_problem(as_json, 422, "idempotency-key-reused")
    assert await count_rows(context, Invite, dispatch["id"]) == 2

    # The same key on another dispatch of the account is another request: refused too.
    _, second = await make_dispatch(client, acme, name="Second")
    elsewhere = await post_csv(client, acme, second["id"], csv, headers=key)
    assert_problem(elsewhere, 422, "idempotency-key-reused")
    assert await count_rows(context, Invite, second["id"]) == 0


async def test_idempotency_keys_are_per_account(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    await setup_account(client, acme, "globex")
    _, acme_dispatch = await make_dispatch(client, acme)
    _, globex_dispatch = await make_dispatch(client, acme, "globex")
    key = {"Idempotency-Key": "same-key"}
    csv = "email,external_id\nann@example.com,c-1\n"
    first = await post_csv(client, acme, acme_dispatch["id"], csv, headers=key)
    assert first.status_code == 202, first.text
    theirs = await post_csv(client, acme, globex_dispatch["id"], csv, account="globex", headers=key)
    assert theirs.status_code == 202, theirs.text
    assert theirs.headers.get("Idempotent-Replayed") is None
    assert theirs.json()["batch"] != first.json()["batch"]
    assert theirs.json()["counts"] == counts(1, 1)
    assert await count_rows(context, Invite, globex_dispatch["id"]) == 1
    assert await count_rows(context, Invite, acme_dispatch["id"]) == 1


async def test_idempotency_key_is_released_when_the_dispatch_is_unknown(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "k-404"}
    missing = await post_csv(client, acme, "dsp_missing", "email\nann@example.com\n", headers=key)
    assert_problem(missing, 404, "not-found")
    response = await post_csv(client, acme, dispatch["id"], "email\nann@example.com\n", headers=key)
    assert response.status_code == 202, response.text
    assert response.headers.get("Idempotent-Replayed") is None


async def test_same_key_while_the_first_request_is_in_flight_is_409(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "slow-upload"}
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"email,external_id\n"
        started.set()
        await release.wait()
        yield b"ann@example.com,c-1\n"

    first = asyncio.create_task(
        client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts",
            headers={**acme, **CSV, **key},
            content=slow_body(),
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    try:
        second = await post_csv(
            client, acme, dispatch["id"], "email\nbob@example.com\n", headers=key
        )
        assert_problem(second, 409, "idempotency-in-flight")
    finally:
        release.set()
    response = await first
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(1, 1)
    replay = await post_csv(
        client, acme, dispatch["id"], "email,external_id\nann@example.com,c-1\n", headers=key
    )
    assert replay.status_code == 202, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == response.json()
    assert await count_rows(context, Invite, dispatch["id"]) == 1


async def test_replayed_failed_upload_is_still_a_problem(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "broken-file"}
    # Broken after its first row (a file refused from its header stores no answer: see
    # test_contacts_columns.py)
    csv = b"email\nann@example.com\nb\xffb@example.com\n"
    first = await post_csv(client, acme, dispatch["id"], csv, headers=key)
    body = assert_problem(first, 422, "contact-file-unreadable")
    replay = await post_csv(client, acme, dispatch["id"], csv, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == body
    assert_problem(replay, 422, "contact-file-unreadable")


async def test_an_overlong_idempotency_key_is_named_as_the_client_sent_it(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email\nann@example.com\n",
        headers={"Idempotency-Key": "k" * 201},
    )
    assert assert_problem(response, 422, "validation-error")["field"] == "Idempotency-Key"
