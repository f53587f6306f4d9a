"""Ingest benchmark: a generated CSV streamed over HTTP into a running service.

Prints contacts/s accepted end to end, the service's CPU and PostgreSQL's per contact, and
the service's RSS growth, next to two raw ceilings measured in the same run: asyncpg
`copy_records_to_table` of the same number of invite rows into an indexed copy of the
invites table (the first ceiling, as in earlier sessions), and of the rows the service
writes, each invite with its first message, into indexed copies of both tables (SQLite:
executemany into the invites copy).

    .venv/bin/python bench/ingest.py --rows 1000000            # PostgreSQL
    .venv/bin/python bench/ingest.py --rows 200000 --db sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench.common import (
    create_database,
    drop_database,
    env_for,
    free_port,
    migrate_and_key,
    peak_rss_mb,
    postgres_cpu_seconds,
    process_cpu_seconds,
    raw_dsn,
    rss_mb,
    setup_dispatch,
    start_api,
)

CHUNK = 64 * 1024


async def csv_body(rows: int) -> AsyncIterator[bytes]:
    buffer = bytearray(b"email,mobile,external_id,first_name,plan\n")
    for i in range(rows):
        buffer += b"person%d@example.com,+3361%07d,ext-%d,Name%d,gold\n" % (i, i % 10_000_000, i, i)
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


INVITE_COLUMNS = [
    "id",
    "account_id",
    "dispatch_id",
    "policy_id",
    "questionnaire_id",
    "token",
    "external_id",
    "sandbox",
    "uuid_hash",
    "fatigue_epoch",
    "email_hash",
    "contact",
    "state",
    "created_at",
    "received_at",
    "valid_until",
]
MESSAGE_COLUMNS = [
    "id",
    "invite_id",
    "account_id",
    "dispatch_id",
    "policy_id",
    "lineup_message_id",
    "position",
    "channel",
    "priority",
    "state",
    "due_at",
    "not_before",
    "attempts",
    "created_at",
]


async def ceiling_pg(url: str, rows: int, *, with_messages: bool) -> tuple[float, str]:
    """Raw COPY of `rows` invite-shaped records into an indexed copy of the invites table;
    `with_messages` also copies each invite's first message into an indexed copy of the
    messages table, as the service does: the same rows it writes."""
    connection = await asyncpg.connect(raw_dsn(url))
    try:
        await connection.execute("CREATE TABLE bench_invites (LIKE invites INCLUDING ALL)")
        await connection.execute("CREATE TABLE bench_messages (LIKE messages INCLUDING ALL)")
        now = datetime.now(UTC)
        started, db_cpu_started = time.perf_counter(), postgres_cpu_seconds()
        step = 50_000
        for offset in range(0, rows, step):
            invites = [
                (
                    f"inv_{secrets.token_hex(10)}",
                    "bench",
                    "d",
                    "p",
                    "q",
                    secrets.token_urlsafe(24),
                    f"ext-{i}",
                    False,
                    f"k:{i:064x}",
                    1,
                    f"k:{i:064x}",
                    "x" * 180,
                    "active",
                    now,
                    now,
                    now + timedelta(days=30),
                )
                for i in range(offset, min(rows, offset + step))
            ]
            async with connection.transaction():
                await connection.copy_records_to_table(
                    "bench_invites", records=invites, columns=INVITE_COLUMNS
                )
                if with_messages:
                    messages = [
                        (
                            f"m_{secrets.token_hex(10)}",
                            invite[0],
                            "bench",
                            "d",
                            "p",
                            "s1",
                            1,
                            "email",
                            1,
                            "pending",
                            now,
                            now,
                            0,
                            now,
                        )
                        for invite in invites
                    ]
                    await connection.copy_records_to_table(
                        "bench_messages", records=messages, columns=MESSAGE_COLUMNS
                    )
        rate = rows / (time.perf_counter() - started)
        db_cpu = postgres_cpu_seconds()
        if db_cpu is None or db_cpu_started is None:
            return rate, ""
        return rate, f", PostgreSQL CPU {(db_cpu - db_cpu_started) / rows * 1e6:,.0f} µs/row"
    finally:
        await connection.execute("DROP TABLE IF EXISTS bench_invites, bench_messages")
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["pg", "sqlite"], default="pg")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="de-bench-"))
    url, pg_name = await create_database("postgresql" if args.db == "pg" else "sqlite", workdir)
    env = env_for(url, workdir, DISPATCH_RUN_SCHEDULER="false")
    try:
        key = migrate_and_key(env)
        port = free_port()
        api = start_api(env, port)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None) as http:
                _, dispatch = await setup_dispatch(
                    http,
                    headers,
                    policy={
                        "name": "Bench",
                        "lineup": [
                            {"channel": "email", "delay": "PT0S"},
                            {"channel": "sms", "delay": "P2D"},
                        ],
                    },
                )
                baseline = rss_mb(api.pid)
                api_cpu, db_cpu = process_cpu_seconds(api.pid), postgres_cpu_seconds()
                started = time.perf_counter()
                response = await http.post(
                    f"/v1/accounts/bench/dispatches/{dispatch}/contacts",
                    headers={**headers, "Content-Type": "text/csv"},
                    content=csv_body(args.rows),
                )
                elapsed = time.perf_counter() - started
                api_cpu = process_cpu_seconds(api.pid) - api_cpu
                db_cpu = (postgres_cpu_seconds() or 0.0) - (db_cpu or 0.0)
                response.raise_for_status()
                counts = response.json()["counts"]
            peak = peak_rss_mb(api.pid)
        finally:
            api.terminate()
            api.wait(10)
        rate = counts["accepted"] / elapsed
        print(
            f"ingest ({args.db}): {counts['accepted']:,} of {args.rows:,} contacts accepted "
            f"in {elapsed:.1f} s = {rate:,.0f} contacts/s; service CPU "
            f"{api_cpu / max(1, args.rows) * 1e6:,.0f} µs/contact"
            + (f", PostgreSQL CPU {db_cpu / args.rows * 1e6:,.0f} µs/contact" if db_cpu else "")
        )
        print(
            f"service RSS: {baseline:.0f} MB before, peak {peak:.0f} MB "
            f"(growth {peak - baseline:.0f} MB)"
        )
        if args.db == "pg":
            ceiling, db_cpu_text = await ceiling_pg(url, args.rows, with_messages=False)
            print(
                f"ceiling, invites only: asyncpg COPY into an indexed invites copy = "
                f"{ceiling:,.0f} rows/s{db_cpu_text}; ratio {rate / ceiling:.2f}"
            )
            ceiling, db_cpu_text = await ceiling_pg(url, args.rows, with_messages=True)
            print(
                f"ceiling, the service's rows: asyncpg COPY of each invite and its first "
                f"message into indexed copies of both tables = {ceiling:,.0f} contacts/s"
                f"{db_cpu_text}; ratio {rate / ceiling:.2f}"
            )
    finally:
        await drop_database(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
