"""Relay benchmark: outbox rows pushed to SQS by the project's OutboxRelay and SQS sender.

Seeds --rows outbox rows (about 1 KB of invitation JSON each) for one account whose queue
integration is `sqs`, pointing at a loopback SQS stand-in (bench/sqs_sink.py, run in its
own process), then drains the outbox with `OutboxRelay` + `SenderCache` — once with a
standard queue, once with a FIFO queue (one message group per invite). Prints messages/s
next to the raw ceiling measured in the same run: a plain aioboto3 `send_message_batch`
loop (10 entries a call, --concurrency calls in flight) against the same sink, with the
same bodies, once as anyone would write it and once configured as the sender configures its
client (no botocore parameter validation, one fixed User-Agent). Each shape is measured
--repeat times (relay and loops back to back, the relay first in odd repeats and last in
even ones) and the medians of the paired ratios are printed: this machine's speed drifts
too much for one run. The sink counts distinct
message ids, so a lost or doubled message shows.

    .venv/bin/python -m bench.relay --rows 30000 --repeat 5
    .venv/bin/python -m bench.relay --rows 30000 --db sqlite
    .venv/bin/python -m bench.relay --rows 2000 --repeat 1  # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import aioboto3
import httpx
from botocore.config import Config
from sqlalchemy import select

from bench.common import KEYS, create_database, drop_database, free_port
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext, build_context
from dispatch_engine.db.bulk import insert_rows
from dispatch_engine.db.migrate import upgrade
from dispatch_engine.delivery.relay import OutboxRelay
from dispatch_engine.models import Account, OutboxEntry, QueueIntegration
from dispatch_engine.models.base import table_of
from dispatch_engine.queues.base import OutgoingMessage, QueueSender
from dispatch_engine.queues.factory import SenderCache, integration_secrets
from dispatch_engine.queues.sqs import USER_AGENT, SqsLimits, SqsQueueSender
from dispatch_engine.runtime import tune_gc
from dispatch_engine.schemas.queue_message import build_invitation, encode_message
from dispatch_engine.security.sealing import integration_secret_aad
from dispatch_engine.settings import Settings

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
ACCOUNT = "bench"
REGION = "us-east-1"
KEY_ID, SECRET = "AKIABENCHBENCHBENCH0", "bench-secret"
ATTRIBUTES = {  # pads the invitation to about 1 KB, as a real one with a few attributes
    "first_name": "Alexandra",
    "last_name": "Montgomery-Featherstonehaugh",
    "store": "Berlin Alexanderplatz (flagship)",
    "segment": "loyalty-gold",
    "order_ref": "ORD-2026-03-0000000000",
    "notes": "x" * 380,
}


@dataclass(frozen=True)
class Timing:
    """Messages moved, wall seconds and this process's CPU seconds for one measured run."""

    messages: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.messages * 1e6

    @staticmethod
    def start() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    @classmethod
    def since(cls, messages: int, started: tuple[float, float]) -> Timing:
        return cls(messages, time.perf_counter() - started[0], time.process_time() - started[1])


class BenchSenders(SenderCache):
    """The project's SenderCache; builds the SQS sender itself while the factory can't yet."""

    limits = SqsLimits()
    built_here = 0

    def _build(self, integration: QueueIntegration) -> QueueSender | None:
        sender = super()._build(integration)
        if sender is not None or integration.kind != "sqs":
            return sender
        BenchSenders.built_here += 1
        config = integration.config
        secrets = integration_secrets(integration, self.context.cipher)
        return SqsQueueSender(
            queue_url=config["queue_url"],
            region=config["region"],
            fifo=bool(config.get("fifo", False)),
            endpoint_url=config.get("endpoint_url"),
            access_key_id=config.get("access_key_id"),
            secret_access_key=secrets.get("secret_access_key"),
            limits=self.limits,
        )


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sqs_sink", "--port", str(port), "--keep-ids"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("ready "):
        process.kill()
        raise RuntimeError("the SQS sink did not start")
    return process, line.split()[1]


async def sink_stats(sink_url: str, reset: bool = False) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sink_url, timeout=10) as http:
        if reset:
            answer = await http.post("/_sink/reset")
        else:
            answer = await http.get("/_sink/stats")
    answer.raise_for_status()
    stats: dict[str, Any] = answer.json()
    return stats


def body_for(message_id: str, invite_id: str, n: int) -> bytes:
    return encode_message(
        build_invitation(
            message_id=message_id,
            invite_id=invite_id,
            token=f"tok_{n:012d}_abcdefghijklmnopqrstuv",
            account=ACCOUNT,
            dispatch="dsp_bench",
            questionnaire="q-bench",
            channel="email",
            address=f"person{n}@example.com",
            message_template="tpl-1",
            lineup_position=1,
            lineup_message_id="msg_1",
            scheduled_at=NOW,
            sent_at=NOW,
            attributes=ATTRIBUTES,
        )
    )


async def seed_account(context: AppContext, sink_url: str) -> None:
    async with context.sessions() as session, session.begin():
        session.add(Account(id=ACCOUNT, name="Bench", created_at=NOW, updated_at=NOW))
        await session.flush()
        session.add(
            QueueIntegration(
                account_id=ACCOUNT,
                kind="sqs",
                config={},
                secret=context.cipher.encrypt_json(
                    {"secret_access_key": SECRET}, aad=integration_secret_aad(ACCOUNT)
                ),
                created_at=NOW,
                updated_at=NOW,
            )
        )
    await point_at(context, sink_url, fifo=False)


async def point_at(context: AppContext, sink_url: str, *, fifo: bool) -> None:
    """Point the integration at the standard or the FIFO queue (a new version)."""
    async with context.sessions() as session, session.begin():
        integration = await session.get(QueueIntegration, ACCOUNT)
        assert integration is not None
        integration.config = {
            "queue_url": f"{sink_url}/123456789012/bench{'.fifo' if fifo else ''}",
            "region": REGION,
            "endpoint_url": sink_url,
            "access_key_id": KEY_ID,
            "fifo": fifo,
        }
        integration.version += 1


async def seed_outbox(context: AppContext, rows: int, prefix: str) -> list[bytes]:
    """`rows` pending outbox rows, one invite each; returns their bodies, which the loops
    measured beside the relay send too (the same distinct messages, not a few repeated)."""
    table = table_of(OutboxEntry)
    columns = set(table.c.keys())
    samples: list[bytes] = []
    step = 10_000
    for offset in range(0, rows, step):
        batch = []
        for n in range(offset, min(rows, offset + step)):
            message_id, invite_id = f"{prefix}{n:010d}", f"inv{prefix}{n:010d}"
            body = body_for(message_id, invite_id, n)
            samples.append(body)
            batch.append(
                {
                    "message_id": message_id,
                    "account_id": ACCOUNT,
                    "invite_id": invite_id,
                    "body": body,
                    "created_at": NOW,
                    "ready_at": NOW,  # when the message could first go out
                    "next_attempt_at": NOW,
                    "attempts": 0,
                }
            )
            if "ready_at" not in columns:  # the column came in while this bench was written
                del batch[-1]["ready_at"]
        async with context.sessions() as session, session.begin():
            await insert_rows(session, table, batch)
    return samples


async def analyze(context: AppContext) -> None:
    """Vacuum and analyze the outbox between runs, as autovacuum would in service (without
    it each repeat's select walks the dead index entries the previous repeats left), then
    checkpoint, so the seeding's writes are not flushed while the relay is being timed."""
    if context.engine.dialect.name == "postgresql":
        async with context.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql("VACUUM ANALYZE outbox")
            await autocommit.exec_driver_sql("CHECKPOINT")


async def drain(context: AppContext, senders: SenderCache) -> tuple[Any, Timing]:
    relay = OutboxRelay(context, senders)
    started = Timing.start()
    result = await relay.run_until_idle(max_rounds=10_000_000)
    return result, Timing.since(result.delivered, started)


async def pending(context: AppContext) -> int:
    async with context.sessions() as session:
        rows = await session.execute(
            select(OutboxEntry.id).where(
                OutboxEntry.delivered_at.is_(None), OutboxEntry.failed_at.is_(None)
            )
        )
        return len(rows.all())


async def ceiling(
    sink_url: str,
    samples: list[bytes],
    messages: int,
    concurrency: int,
    *,
    fifo: bool,
    tuned: bool = False,
) -> Timing:
    """Plain aioboto3: `messages` sent as batches of 10, `concurrency` calls in flight
    (`tuned`: the client configured as the sender's — botocore's parameter validation off
    and a fixed User-Agent — so the gap to the relay is the relay's own work)."""
    queue_url = f"{sink_url}/123456789012/ceiling{'.fifo' if fifo else ''}"
    texts = [b.decode() for b in samples]
    calls = (messages + 9) // 10
    next_call = 0

    async def worker(client: Any) -> None:
        nonlocal next_call
        while next_call < calls:
            call = next_call
            next_call += 1
            entries = []
            for i in range(10):
                n = call * 10 + i
                entry = {"Id": str(i), "MessageBody": texts[n % len(texts)]}
                if fifo:
                    entry["MessageGroupId"] = f"g{n}"
                    entry["MessageDeduplicationId"] = f"c{n}"
                entries.append(entry)
            answer = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            assert not answer.get("Failed")

    client_context = aioboto3.Session().client(
        "sqs",
        region_name=REGION,
        endpoint_url=sink_url,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            max_pool_connections=max(10, concurrency),
            parameter_validation=not tuned,
            user_agent=USER_AGENT if tuned else None,
        ),
    )
    async with client_context as client:
        await client.get_queue_url(QueueName="warm-up")  # connection, endpoint resolution
        started = Timing.start()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return Timing.since(calls * 10, started)


async def sender_alone(
    sink_url: str, samples: list[bytes], messages: int, chunk: int, limits: SqsLimits, *, fifo: bool
) -> Timing:
    """SqsQueueSender.send_batch in relay-sized calls, no database: the sender's own cost."""
    sender = SqsQueueSender(
        queue_url=f"{sink_url}/123456789012/alone{'.fifo' if fifo else ''}",
        region=REGION,
        fifo=fifo,
        endpoint_url=sink_url,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        limits=limits,
    )
    batch = [
        OutgoingMessage(f"a{n:010d}", f"inva{n:010d}", samples[n % len(samples)])
        for n in range(messages)
    ]
    try:
        assert await sender.send_batch(batch[:1]) == []  # client, connection
        started = Timing.start()
        for offset in range(0, messages, chunk):
            assert await sender.send_batch(batch[offset : offset + chunk]) == []
        return Timing.since(messages, started)
    finally:
        await sender.aclose()


async def run_loops(
    sink_url: str,
    samples: list[bytes],
    messages: int,
    chunk: int,
    limits: SqsLimits,
    *,
    fifo: bool,
) -> dict[str, Timing]:
    """The sender alone and the two plain aioboto3 loops, over the relay's messages."""
    concurrency = limits.concurrency
    return {
        "sender": await sender_alone(sink_url, samples, messages, chunk, limits, fifo=fifo),
        "raw": await ceiling(sink_url, samples, messages, concurrency, fifo=fifo),
        "tuned": await ceiling(sink_url, samples, messages, concurrency, fifo=fifo, tuned=True),
    }


def report(shape: str, runs: list[dict[str, Timing]], chunk: int, concurrency: int) -> None:
    """Medians over the repeats: rates, CPU per message, and ratios of paired runs."""

    def rate(key: str) -> str:
        return f"{median(r[key].rate for r in runs):,.0f} messages/s"

    def cpu(key: str) -> str:
        return f"{median(r[key].cpu_us for r in runs):.0f} µs CPU each"

    def ratio(key: str, to: str) -> str:
        return f"{median(r[key].rate / r[to].rate for r in runs):.2f}"

    print(f"{shape}: medians of {len(runs)} paired runs")
    print(f"  relay (OutboxRelay, batch {chunk}): {rate('relay')} ({cpu('relay')})")
    print(
        f"  sender alone (send_batch of {chunk}, no database): {rate('sender')} ({cpu('sender')})"
    )
    print(
        f"  ceiling: plain aioboto3 send_message_batch x10, {concurrency} in flight, same sink: "
        f"{rate('raw')} ({cpu('raw')}); ratio relay {ratio('relay', 'raw')}, sender "
        f"{ratio('sender', 'raw')}"
    )
    print(
        f"  the same loop with its client configured as the sender's (no parameter "
        f"validation, fixed User-Agent): {rate('tuned')} ({cpu('tuned')}); ratio relay "
        f"{ratio('relay', 'tuned')}, sender {ratio('sender', 'tuned')}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db", choices=["pg", "sqlite"], default="pg")
    parser.add_argument("--batch", type=int, default=None, help="relay batch (default: setting)")
    parser.add_argument("--concurrency", type=int, default=SqsLimits().concurrency)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per shape")
    parser.add_argument("--shape", choices=["standard", "fifo", "both"], default="both")
    args = parser.parse_args()
    limits = BenchSenders.limits = SqsLimits(concurrency=args.concurrency)
    workdir = Path(tempfile.mkdtemp(prefix="de-bench-"))
    url, pg_name = await create_database("postgresql" if args.db == "pg" else "sqlite", workdir)
    sink, sink_url = start_sink()
    try:
        await asyncio.to_thread(upgrade, url)
        os.environ.update(KEYS)
        overrides: dict[str, Any] = {"relay_batch_size": args.batch} if args.batch else {}
        if "sqs_concurrency" in Settings.model_fields:
            overrides["sqs_concurrency"] = args.concurrency
        settings = Settings(
            database_url=url,
            data_dir=workdir,
            # The sink listens on loopback: allow-listed, or the senders refuse it.
            webhook_allow_http=True,
            webhook_allowlist=["127.0.0.1/32"],
            **overrides,
        )
        context = build_context(settings, FrozenClock(NOW))
        tune_gc()  # as the worker process does at start
        senders = BenchSenders(context)
        await seed_account(context, sink_url)
        chunk = settings.relay_batch_size
        for shape in ("standard", "fifo") if args.shape == "both" else (args.shape,):
            fifo = shape == "fifo"
            await point_at(context, sink_url, fifo=fifo)
            runs: list[dict[str, Timing]] = []
            for repeat in range(args.repeat):
                # Each repeat measures the relay and the loops back to back, so a slow spell
                # of this shared machine hits both sides of a ratio alike.
                started = time.perf_counter()
                samples = await seed_outbox(context, args.rows, f"{shape[0]}{repeat}-")
                await analyze(context)
                seeded = time.perf_counter() - started
                loops_first = repeat % 2 == 1  # alternate, so neither side always runs
                # right after the seeding's writes or always on a machine warmed by the other
                loops = (
                    await run_loops(sink_url, samples, args.rows, chunk, limits, fifo=fifo)
                    if loops_first
                    else {}
                )
                await sink_stats(sink_url, reset=True)
                result, relayed = await drain(context, senders)
                stats = await sink_stats(sink_url)
                left = await pending(context)
                if not loops_first:
                    loops = await run_loops(sink_url, samples, args.rows, chunk, limits, fifo=fifo)
                run = {"relay": relayed, **loops}
                runs.append(run)
                print(
                    f"relay → SQS {shape} #{repeat + 1} ({args.db}, relay batch {chunk}, "
                    f"{args.concurrency} requests in flight, {len(samples[0]):,} B messages): "
                    f"{result.delivered:,} delivered in {relayed.wall:.1f} s; retried "
                    f"{result.retried}, failed {result.failed}, left {left}; sink got "
                    f"{stats['messages']:,} messages, {stats['distinct_ids']:,} distinct ids in "
                    f"{stats['batches']:,} requests (seeded in {seeded:.1f} s)"
                )
                print(
                    "  "
                    + "; ".join(f"{k} {t.rate:,.0f}/s {t.cpu_us:.0f} µs" for k, t in run.items())
                )
                if stats["distinct_ids"] != args.rows or stats["duplicates"] or left:
                    print("  WARNING: not every row arrived exactly once")
            report(shape, runs, chunk, args.concurrency)
        await senders.aclose()
        await context.aclose()
        how = "SenderCache subclass (bench-built)" if BenchSenders.built_here else "factory"
        print(f"(SQS sender built by: {how})")
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        await drop_database(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
