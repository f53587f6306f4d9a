"""Large contact files: streamed in small chunks and fully accepted, their rows stored and
pollable while the file is still arriving, and (PostgreSQL) the planner statistics
refreshed after a large upload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy import text

from dispatch_engine.context import AppContext
from dispatch_engine.models import Invite
from dispatch_engine.security.sealing import open_contact
from tests.helpers import (
    ACME,
    CSV,
    count_rows,
    counts,
    get_batch,
    invites_by_external_id,
    make_dispatch,
)

# --- streaming ----------------------------------------------------------------------------------------


STREAM_ROWS = 20_000
PIECE = 4096


def streamed_row(i: int) -> str:
    # Multi-byte characters, quoted delimiters and doubled quotes, so chunk ends fall inside
    # UTF-8 sequences, quoted fields and CRLF pairs.
    return f'p{i}@example.com,s-{i},"Zoë ""{i}"", Ünïcødé, ☃",{i % 7}\r\n'


async def test_a_large_csv_streamed_in_small_chunks_is_fully_accepted(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    header = b"email,external_id,name,segment\r\n"
    lines = [streamed_row(i).encode() for i in range(STREAM_ROWS)]
    payload = header + b"".join(lines)
    # Rows (by index) whose bytes span a chunk boundary.
    straddling: list[int] = []
    offset = len(header)
    for i, line in enumerate(lines):
        if offset // PIECE != (offset + len(line) - 1) // PIECE:
            straddling.append(i)
        offset += len(line)
    assert len(straddling) > 100
    pieces_sent = 0

    async def pieces() -> AsyncIterator[bytes]:
        nonlocal pieces_sent
        for start in range(0, len(payload), PIECE):
            pieces_sent += 1
            yield payload[start : start + PIECE]

    response = await client.post(
        f"{ACME}/dispatches/{dispatch['id']}/contacts",
        headers={**acme, **CSV},
        content=pieces(),
    )
    assert response.status_code == 202, response.text
    assert pieces_sent == -(-len(payload) // PIECE)
    body = response.json()
    assert body["status"] == "completed"
    assert body["counts"] == counts(STREAM_ROWS, STREAM_ROWS)
    assert await count_rows(context, Invite, dispatch["id"]) == STREAM_ROWS

    checked = [*straddling[:3], straddling[len(straddling) // 2], straddling[-1], STREAM_ROWS - 1]
    invite_ids = {}
    for i in checked:
        (invite,) = await invites_by_external_id(client, acme, f"s-{i}", dispatch["id"])
        invite_ids[i] = invite["id"]
    async with context.sessions() as session:
        for i in checked:
            row = await session.get(Invite, invite_ids[i])
            assert row is not None and row.contact is not None
            assert row.row_number == i + 2
            opened = open_contact(context.cipher, row.id, row.contact)
            assert opened["email"] == f"p{i}@example.com"
            assert opened["attributes"] == {
                "name": f'Zoë "{i}", Ünïcødé, ☃',
                "segment": str(i % 7),
            }


async def test_rows_are_stored_and_pollable_while_the_file_is_still_arriving(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    chunk_rows = context.settings.upload_batch_rows
    first_part = chunk_rows + chunk_rows // 4
    head = "email,external_id,name,segment\r\n" + "".join(
        streamed_row(i) for i in range(first_part)
    )
    tail = "".join(streamed_row(i) for i in range(first_part, first_part + 10))
    paused, release = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        data = head.encode()
        for start in range(0, len(data), PIECE):
            yield data[start : start + PIECE]
        paused.set()
        await release.wait()
        yield tail.encode()

    upload = asyncio.create_task(
        client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts",
            headers={**acme, **CSV},
            content=body(),
        )
    )
    try:
        await asyncio.wait_for(paused.wait(), 30)
        async with context.engine.connect() as connection:
            (batch_id,) = (
                await connection.execute(
                    text("SELECT id FROM contact_batches WHERE dispatch_id = :d"),
                    {"d": dispatch["id"]},
                )
            ).one()
        # The first chunk commits while the rest of the file has not arrived.
        deadline = asyncio.get_running_loop().time() + 15
        batch = await get_batch(client, acme, batch_id)
        while batch["counts"]["rows"] < chunk_rows and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            batch = await get_batch(client, acme, batch_id)
        assert batch["status"] == "processing"
        assert batch["counts"] == counts(chunk_rows, chunk_rows)
        assert batch["finished_at"] is None
        assert await count_rows(context, Invite, dispatch["id"]) == chunk_rows
    finally:
        release.set()
    response = await upload
    assert response.status_code == 202, response.text
    assert response.json()["batch"] == batch_id
    assert response.json()["counts"] == counts(first_part + 10, first_part + 10)


async def _last_analyze(context: AppContext) -> datetime | None:
    async with context.engine.connect() as connection:
        query = text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'messages'")
        value: datetime | None = (await connection.execute(query)).scalar_one()
        return value


async def test_a_large_upload_refreshes_the_planner_statistics(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    """Claims plan their index walk from these statistics (db/statistics.py)."""
    if context.engine.dialect.name != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's")
    _, dispatch = await make_dispatch(client, acme)
    before = await _last_analyze(context)
    rows = context.settings.upload_batch_rows + 100
    body = "email,external_id\r\n" + "".join(f"s{i}@example.com,s-{i}\r\n" for i in range(rows))
    response = await client.post(
        f"{ACME}/dispatches/{dispatch['id']}/contacts", headers={**acme, **CSV}, content=body
    )
    assert response.status_code == 202, response.text
    assert response.json()["counts"]["accepted"] == rows
    for _ in range(50):  # the statistics view is updated a moment after ANALYZE ends
        after = await _last_analyze(context)
        if after is not None and (before is None or after > before):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"messages were not analyzed (last_analyze {before} → {after})")
