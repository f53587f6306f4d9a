"""Dispatch benchmark: due first messages through the whole rule pipeline into the outbox.

Unsubscribe, fatigue rules 1 and 2 and a business window are on (no DND unless
--dnd-ms is given, which starts a loopback webhook answering after that many ms).
One in-process worker (DeliveryEngine, batches of --batch). Prints messages/s next to the
raw ceiling measured in the same run: the plain claim-and-write SQL (SKIP LOCKED claim,
mark sent, COPY outbox rows) over the same rows, on the same database.

    .venv/bin/python -m bench.dispatch --rows 1000000
    .venv/bin/python -m bench.dispatch --rows 200000 --db sqlite
    .venv/bin/python -m bench.dispatch --rows 50000 --dnd-ms 20
    .venv/bin/python -m bench.dispatch --rows 200000 --workers 2   # N worker processes
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import socket
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn

from bench.common import (
    ALL_WEEK,
    KEYS,
    create_database,
    drop_database,
    free_port,
    postgres_cpu_seconds,
    raw_dsn,
)
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import build_context
from dispatch_engine.db.bulk import insert_rows
from dispatch_engine.db.migrate import upgrade
from dispatch_engine.delivery.engine import DeliveryEngine
from dispatch_engine.ingest.service import new_token
from dispatch_engine.models import (
    Account,
    Dispatch,
    FatigueLedger,
    Invite,
    LineupMessage,
    Message,
    Policy,
    QueueIntegration,
    Unsubscribe,
    new_id,
)
from dispatch_engine.models.base import table_of
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.runtime import tune_gc
from dispatch_engine.security.hashing import keyed_hash
from dispatch_engine.security.sealing import seal_contact
from dispatch_engine.settings import Settings

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday noon
OUTBOX_COLUMNS = [  # what the ceilings copy into the outbox, in record order
    "message_id",
    "account_id",
    "invite_id",
    "body",
    "created_at",
    "ready_at",
    "next_attempt_at",
    "attempts",
]


async def seed(context: Any, rows: int, dnd_url: str | None) -> None:
    """An account, a policy with every rule on, a dispatch and `rows` due first messages."""
    fatigue = {
        "pending_token": {"enabled": True},
        "max_invites": {"enabled": True, "count": 3, "days": 30, "scope": "all"},
    }
    async with context.sessions() as session, session.begin():
        session.add(Account(id="bench", name="Bench", created_at=NOW, updated_at=NOW))
        await session.flush()
        session.add(
            QueueIntegration(account_id="bench", kind="local", created_at=NOW, updated_at=NOW)
        )
        session.add(
            Policy(
                id="pol_bench",
                account_id="bench",
                name="B",
                name_key="b",
                uuid_field="email",
                fatigue=fatigue,
                business_rules={
                    "time_zone": "Europe/Berlin",
                    "days": {d: [{"start": "08:00", "end": "20:00"}] for d in ALL_WEEK},
                    "use_contact_time_zone": False,
                },
                dnd_webhooks={"email": dnd_url, "sms": None},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await session.flush()
        session.add(
            LineupMessage(
                id="msg_1",
                policy_id="pol_bench",
                position=1,
                channel="email",
                delay_seconds=0,
                created_at=NOW,
            )
        )
        session.add(
            Dispatch(
                id="dsp_bench",
                account_id="bench",
                policy_id="pol_bench",
                questionnaire_id="q",
                token_validity_seconds=30 * 86400,
                message_templates={"msg_1": "tpl-1"},
                created_at=NOW,
                updated_at=NOW,
            )
        )
    step = 20_000
    for offset in range(0, rows, step):
        invites, messages, unsubscribes, ledger = [], [], [], []
        for i in range(offset, min(rows, offset + step)):
            email = f"person{i}@example.com"
            invite_id = new_id("inv")
            uuid_hash = keyed_hash(context.hasher, email)
            invites.append(
                {
                    "id": invite_id,
                    "account_id": "bench",
                    "dispatch_id": "dsp_bench",
                    "policy_id": "pol_bench",
                    "questionnaire_id": "q",
                    "batch_id": None,
                    "row_number": i,
                    "token": new_token(),
                    "external_id": None,
                    "sandbox": False,
                    "uuid_hash": uuid_hash,
                    "fatigue_epoch": 1,
                    "fatigue_lock": fatigue_lock_key("pol_bench", 1, False, uuid_hash),
                    "email_hash": uuid_hash,
                    "mobile_hash": None,
                    "time_zone": None,
                    "contact": seal_contact(
                        context.cipher,
                        invite_id,
                        email=email,
                        mobile=None,
                        attributes={"first_name": f"P{i}"},
                    ),
                    "state": "active",
                    "end_reason": None,
                    "created_at": NOW,
                    "received_at": NOW,
                    "valid_until": NOW + timedelta(days=30),
                    "first_sent_at": None,
                    "responded_at": None,
                    "ended_at": None,
                    "erased_at": None,
                }
            )
            messages.append(
                {
                    "id": new_id("m"),
                    "invite_id": invite_id,
                    "account_id": "bench",
                    "dispatch_id": "dsp_bench",
                    "policy_id": "pol_bench",
                    "lineup_message_id": "msg_1",
                    "position": 1,
                    "channel": "email",
                    "priority": 1,
                    "state": "pending",
                    "due_at": NOW,
                    "not_before": NOW,
                    "attempts": 0,
                    "created_at": NOW,
                }
            )
            if i % 100 == 0:  # 1 % unsubscribed
                unsubscribes.append(
                    {
                        "account_id": "bench",
                        "channel": "email",
                        "address_hash": uuid_hash,
                        "created_at": NOW,
                        "source": "bench",
                    }
                )
            if i % 50 == 0:  # 2 % already have 3 invites this month (rule 2 suppresses)
                for k in range(3):
                    ledger.append(
                        {
                            "account_id": "bench",
                            "policy_id": "other",
                            "fatigue_epoch": 1,
                            "questionnaire_id": "q-old",
                            "invite_id": f"old{i}-{k}",
                            "uuid_hash": uuid_hash,
                            "sandbox": False,
                            "sent_at": NOW - timedelta(days=k + 1),
                        }
                    )
        async with context.sessions() as session, session.begin():
            await insert_rows(session, table_of(Invite), invites)
            await insert_rows(session, table_of(Message), messages)
            await insert_rows(session, table_of(Unsubscribe), unsubscribes)
            await insert_rows(session, table_of(FatigueLedger), ledger)


def _per_message_us(db_cpu_started: float | None, count: int) -> str:
    """PostgreSQL's CPU per message since `db_cpu_started`, when it runs on this machine."""
    now = postgres_cpu_seconds()
    if db_cpu_started is None or now is None:
        return ""
    return f", PostgreSQL CPU {(now - db_cpu_started) / max(1, count) * 1e6:,.0f} µs/message"


async def average_body_size(url: str) -> int:
    """The mean size of the queue bodies the pipeline wrote (before a ceiling clears them)."""
    connection = await asyncpg.connect(raw_dsn(url))
    try:
        return int(await connection.fetchval("SELECT coalesce(avg(length(body)), 0) FROM outbox"))
    finally:
        await connection.close()


async def ceiling_same_writes_pg(url: str, batch: int, body_size: int) -> tuple[int, float, str]:
    """Every write the pipeline makes for a sent first message, by hand-written SQL in one
    transaction per batch, as the pipeline's locked rounds do: claim (SKIP LOCKED, joined to
    the invite for its fatigue columns), mark sent, COPY the outbox rows with bodies of the
    pipeline's average size, COPY the fatigue-ledger rows, complete the invites (the bench's
    lineup has one step). No reads of facts and no rule: an upper bound, not a rival design."""
    connection = await asyncpg.connect(raw_dsn(url))
    try:
        await connection.execute(
            "UPDATE messages SET state='pending', sent_at=NULL, decided_at=NULL, "
            "handled_by=NULL, rule=NULL, reason=NULL, claim_token=NULL, lease_until=NULL "
            "WHERE state <> 'pending'"
        )
        await connection.execute(
            "UPDATE invites SET first_sent_at=NULL, state='active', end_reason=NULL, "
            "ended_at=NULL WHERE first_sent_at IS NOT NULL OR state <> 'active'"
        )
        await connection.execute("DELETE FROM fatigue_ledger WHERE policy_id = 'pol_bench'")
        await connection.execute("TRUNCATE outbox")
        for table in ("messages", "invites", "fatigue_ledger"):
            await connection.execute(f"VACUUM ANALYZE {table}")
        body = b"x" * body_size
        done = 0
        started, db_cpu_started = time.perf_counter(), postgres_cpu_seconds()
        while True:
            async with connection.transaction():
                rows = await connection.fetch(
                    "SELECT m.id, m.account_id, m.invite_id, m.policy_id, m.not_before,"
                    " i.questionnaire_id, i.uuid_hash, i.sandbox"
                    " FROM messages m JOIN invites i ON i.id = m.invite_id WHERE m.id IN ("
                    " SELECT id FROM messages WHERE state IN ('pending','deferred')"
                    " AND not_before <= $1 ORDER BY priority, not_before, due_at, id"
                    " LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    NOW,
                    batch,
                )
                if not rows:
                    break
                ids = [r["id"] for r in rows]
                await connection.execute(
                    "UPDATE messages SET state='sent', sent_at=$2, decided_at=$2, handled_by=$3,"
                    " claim_token=NULL, lease_until=NULL WHERE id = ANY($1::varchar[])",
                    ids,
                    NOW,
                    "ceiling",
                )
                await connection.copy_records_to_table(
                    "outbox",
                    records=[
                        (
                            r["id"],
                            r["account_id"],
                            r["invite_id"],
                            body,
                            NOW,
                            r["not_before"],
                            NOW,
                            0,
                        )
                        for r in rows
                    ],
                    columns=OUTBOX_COLUMNS,
                )
                await connection.copy_records_to_table(
                    "fatigue_ledger",
                    records=[
                        (
                            r["account_id"],
                            r["policy_id"],
                            1,
                            r["questionnaire_id"],
                            r["invite_id"],
                            r["uuid_hash"],
                            r["sandbox"],
                            NOW,
                        )
                        for r in rows
                    ],
                    columns=[
                        "account_id",
                        "policy_id",
                        "fatigue_epoch",
                        "questionnaire_id",
                        "invite_id",
                        "uuid_hash",
                        "sandbox",
                        "sent_at",
                    ],
                )
                await connection.execute(
                    "UPDATE invites SET first_sent_at=$2, state='completed',"
                    " end_reason='lineup_done' WHERE id = ANY($1::varchar[])",
                    [r["invite_id"] for r in rows],
                    NOW,
                )
            done += len(rows)
        rate = done / (time.perf_counter() - started)
        return done, rate, _per_message_us(db_cpu_started, done)
    finally:
        await connection.close()


async def ceiling_pg(url: str, batch: int) -> tuple[int, float, str]:
    """The same rows claimed and written by hand-written SQL (no rules, no Python per row)."""
    connection = await asyncpg.connect(raw_dsn(url))
    try:
        await connection.execute(
            "UPDATE messages SET state='pending', claim_token=NULL, lease_until=NULL "
            "WHERE state <> 'pending'"
        )
        await connection.execute("TRUNCATE outbox")
        await connection.execute("VACUUM ANALYZE messages")
        body = b'{"bench": true}'
        done = 0
        started, db_cpu_started = time.perf_counter(), postgres_cpu_seconds()
        while True:
            async with connection.transaction():
                rows = await connection.fetch(
                    "UPDATE messages SET claim_token = $1, lease_until = $2 WHERE id IN ("
                    " SELECT id FROM messages WHERE state IN ('pending','deferred')"
                    " AND not_before <= $2 ORDER BY priority, not_before, due_at, id"
                    " LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id, account_id, invite_id",
                    secrets.token_hex(16),
                    NOW,
                    batch,
                )
            if not rows:
                break
            async with connection.transaction():
                await connection.execute(
                    "UPDATE messages SET state='sent', sent_at=$2, claim_token=NULL, "
                    "lease_until=NULL WHERE id = ANY($1::varchar[])",
                    [r["id"] for r in rows],
                    NOW,
                )
                await connection.copy_records_to_table(
                    "outbox",
                    records=[
                        (r["id"], r["account_id"], r["invite_id"], body, NOW, NOW, NOW, 0)
                        for r in rows
                    ],
                    columns=OUTBOX_COLUMNS,
                )
            done += len(rows)
        rate = done / (time.perf_counter() - started)
        return done, rate, _per_message_us(db_cpu_started, done)
    finally:
        await connection.close()


def _worker_process(settings: Settings, batch: int, results: Any) -> None:
    """One worker process: its own context and engine, until nothing is due."""

    async def run() -> tuple[int, dict[str, int]]:
        from dispatch_engine.scheduler.worker import Worker

        context = build_context(settings, FrozenClock(NOW))

        tune_gc()  # as the worker process does at start
        worker = Worker(context)  # for its guarded DND client, as in production
        try:
            engine = DeliveryEngine(context, worker.engine.dnd_client, batch_size=batch)
            result = await engine.run_until_idle(10_000_000)
            return result.claimed, dict(result.outcomes)
        finally:
            await worker.shutdown(0)
            await context.aclose()

    results.put(asyncio.run(run()))


def run_worker_processes(
    settings: Settings, workers: int, batch: int
) -> tuple[int, float, Counter[str]]:
    """N processes drain the same due messages concurrently (SKIP LOCKED keeps them apart)."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    processes = [
        spawn.Process(target=_worker_process, args=(settings, batch, results))
        for _ in range(workers)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    claimed, outcomes = 0, Counter[str]()
    for _ in processes:
        done, seen = results.get()
        claimed += done
        outcomes.update(seen)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    return claimed, elapsed, outcomes


class _DndApp:
    """A webhook that answers "not in DND" after a fixed delay (ASGI, picklable for spawn)."""

    def __init__(self, delay_ms: float) -> None:
        self.delay = delay_ms / 1000

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await asyncio.sleep(self.delay)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"dnd": false}'})


def _serve_dnd(delay_ms: float, port: int) -> None:
    uvicorn.run(_DndApp(delay_ms), host="127.0.0.1", port=port, log_level="error")


def start_dnd_server(delay_ms: float) -> tuple[str, multiprocessing.process.BaseProcess]:
    """The webhook runs in its own process, as a customer's would: its CPU is not the
    worker's, and it does not share the worker's GIL."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve_dnd, args=(delay_ms, port), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"http://127.0.0.1:{port}/dnd", process


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["pg", "sqlite"], default="pg")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dnd-ms", type=float, default=None)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL)")
    parser.add_argument("--dnd-concurrency", type=int, default=64, help="webhook calls at once")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="rounds at once per worker (PostgreSQL)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="de-bench-"))
    url, pg_name = await create_database("postgresql" if args.db == "pg" else "sqlite", workdir)
    server = None
    try:
        await asyncio.to_thread(upgrade, url)
        os.environ.update(KEYS)
        settings = Settings(
            database_url=url,
            data_dir=workdir,
            webhook_allow_http=True,
            webhook_allowlist=["127.0.0.1/32"],
            dnd_concurrency=args.dnd_concurrency,
            **({"claim_concurrency": args.concurrency} if args.concurrency else {}),
        )
        dnd_url = None
        if args.dnd_ms is not None:
            dnd_url, server = start_dnd_server(args.dnd_ms)
        from dispatch_engine.scheduler.worker import Worker

        context = build_context(settings, FrozenClock(NOW))

        tune_gc()  # as the worker process does at start
        started = time.perf_counter()
        await seed(context, args.rows, dnd_url)
        print(f"seeded {args.rows:,} due first messages in {time.perf_counter() - started:.1f} s")
        if args.db == "pg":
            # Outside a transaction: inside one (SQLAlchemy's default) the new statistics
            # were rolled back with it, and every claim planned a sort of all due messages.
            async with context.engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql("ANALYZE")
        if args.workers > 1:
            claimed, elapsed, outcomes = run_worker_processes(settings, args.workers, args.batch)
            rate = claimed / elapsed
            dnd = (
                f", DND webhook answering in {args.dnd_ms:g} ms" if args.dnd_ms is not None else ""
            )
            print(
                f"pipeline ({args.db}{dnd}, {args.workers} worker processes): {claimed:,} "
                f"messages decided in {elapsed:.1f} s = {rate:,.0f} messages/s; "
                f"outcomes {dict(outcomes)}"
            )
            await context.aclose()
            return
        worker = Worker(context)
        engine = DeliveryEngine(context, worker.engine.dnd_client, batch_size=args.batch)
        started, cpu_started = time.perf_counter(), time.process_time()
        db_cpu_started = postgres_cpu_seconds() if args.db == "pg" else None
        profiler = None
        if os.environ.get("BENCH_CPROFILE"):
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        result = await engine.run_until_idle(max_rounds=10_000_000)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.environ["BENCH_CPROFILE"])
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        db_cpu = _per_message_us(db_cpu_started, result.claimed)
        await worker.shutdown(0)
        rate = result.claimed / elapsed
        dnd = f", DND webhook answering in {args.dnd_ms:g} ms" if args.dnd_ms is not None else ""
        print(
            f"pipeline ({args.db}{dnd}): {result.claimed:,} messages decided in {elapsed:.1f} s "
            f"= {rate:,.0f} messages/s; outcomes {dict(result.outcomes)}; worker CPU "
            f"{cpu / max(1, result.claimed) * 1e6:,.0f} µs/message{db_cpu}"
        )
        await context.aclose()
        if args.db == "pg" and args.dnd_ms is None:
            body_size = await average_body_size(url)
            done, ceiling, ceiling_db_cpu = await ceiling_pg(url, args.batch)
            print(
                f"ceiling, claim and outbox only: raw SKIP LOCKED claim + mark sent + COPY "
                f"outbox with 15-byte bodies of {done:,} rows = {ceiling:,.0f} rows/s"
                f"{ceiling_db_cpu}; ratio {rate / ceiling:.2f}"
            )
            done, ceiling, ceiling_db_cpu = await ceiling_same_writes_pg(url, args.batch, body_size)
            print(
                f"ceiling, the pipeline's writes: raw claim + mark sent + COPY outbox "
                f"({body_size}-byte bodies) + COPY fatigue ledger + complete invites, one "
                f"transaction per batch, of {done:,} rows = {ceiling:,.0f} rows/s"
                f"{ceiling_db_cpu}; ratio {rate / ceiling:.2f}"
            )
    finally:
        if server is not None:
            server.terminate()
        await drop_database(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
