"""Measure what `dispatch-engine api` and `dispatch-engine worker` use, for the Kubernetes
requests and limits (deploy/README.md, "Resource figures").

Starts both roles as separate processes on a fresh PostgreSQL database, pushes to the
benchmarks' SQS-protocol sink (so the worker carries the real queue client), posts contact
files over HTTP for a while, and samples each process's RSS and CPU from /proc every
half second. Run from the repository root:

    .venv/bin/python deploy/measure_resources.py --files 6 --rows 20000

PostgreSQL: DISPATCH_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ALL_WEEK,
    CLI,
    create_database,
    drop_database,
    env_for,
    free_port,
    migrate_and_key,
    peak_rss_mb,
    process_cpu_seconds,
    rss_mb,
    start_api,
)

SAMPLE_SECONDS = 0.5


async def csv_body(rows: int, offset: int) -> AsyncIterator[bytes]:
    buffer = bytearray(b"email,external_id,first_name\n")
    for i in range(offset, offset + rows):
        buffer += b"m%d@example.com,x%d,Name%d\n" % (i, i, i)
        if len(buffer) >= 65536:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


class Sampler:
    """RSS (MiB) and CPU (cores, over each sample interval) of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[float] = []
        self.cpu: list[float] = []
        self._last = (time.monotonic(), process_cpu_seconds(pid))

    def sample(self) -> None:
        now, cpu = time.monotonic(), process_cpu_seconds(self.pid)
        self.cpu.append((cpu - self._last[1]) / max(now - self._last[0], 1e-6))
        self._last = (now, cpu)
        self.rss.append(rss_mb(self.pid))

    def report(self, name: str, idle_rss: float) -> str:
        cpu = sorted(self.cpu) or [0.0]
        p95 = cpu[min(len(cpu) - 1, int(len(cpu) * 0.95))]
        return (
            f"{name:6s} RSS idle {idle_rss:6.0f} MiB, under load max {max(self.rss):6.0f} MiB "
            f"(VmHWM {peak_rss_mb(self.pid):.0f}); CPU mean {statistics.fmean(cpu):.2f}, "
            f"p95 {p95:.2f}, max {cpu[-1]:.2f} cores ({len(cpu)} samples of {SAMPLE_SECONDS}s)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=6, help="contact files to post")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per file")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between files")
    parser.add_argument(
        "--json-mb",
        type=float,
        default=0,
        help="then post one JSON document of about this size (the API parses JSON whole; "
        "its limit is 64 MiB) and report the API's peak RSS",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="de-resources-"))
    url, pg_name = await create_database("postgresql", workdir)
    env = env_for(
        url,
        workdir,
        DISPATCH_RUN_SCHEDULER="false",
        DISPATCH_METRICS_PORT=str(free_port()),
        DISPATCH_HOST="127.0.0.1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sqs_sink", "--port", str(sink_port)],
        stdout=subprocess.DEVNULL,
    )
    sink_url = f"http://127.0.0.1:{sink_port}"
    processes: list[subprocess.Popen[bytes]] = [sink]
    try:
        key = migrate_and_key(env)
        api_port = free_port()
        api = start_api(env, api_port)
        processes.append(api)
        worker = subprocess.Popen(
            [CLI, "worker", "--grace", "10"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(worker)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=None) as http:
            await http.post("/v1/accounts", headers=headers, json={"id": "res", "name": "R"})
            (
                await http.put(
                    "/v1/accounts/res/queue-integration",
                    headers=headers,
                    json={
                        "kind": "sqs",
                        "queue_url": f"{sink_url}/123456789012/res",
                        "region": "us-east-1",
                        "endpoint_url": sink_url,
                        "access_key_id": "x",
                        "secret_access_key": "y",
                    },
                )
            ).raise_for_status()
            created = await http.post(
                "/v1/accounts/res/policies",
                headers=headers,
                json={
                    "name": "Now",
                    "lineup": [{"channel": "email", "delay": "PT0S"}],
                    "business_rules": {"time_zone": "UTC", "days": ALL_WEEK},
                    "fatigue": {"pending_token": {"enabled": False}},
                },
            )
            created.raise_for_status()
            policy = created.json()
            dispatch = (
                await http.post(
                    "/v1/accounts/res/dispatches",
                    headers=headers,
                    json={
                        "questionnaire_id": "q",
                        "policy_id": policy["id"],
                        "token_validity": "P7D",
                        "message_templates": {policy["lineup"][0]["id"]: "tpl"},
                    },
                )
            ).json()
            await asyncio.sleep(5)  # settle: imports done, pools open, first ticks run
            idle = {"api": rss_mb(api.pid), "worker": rss_mb(worker.pid)}
            samplers = {"api": Sampler(api.pid), "worker": Sampler(worker.pid)}
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    await asyncio.sleep(SAMPLE_SECONDS)
                    for sampler in samplers.values():
                        sampler.sample()

            sampling = asyncio.create_task(sample())
            started = time.perf_counter()
            total = 0
            for n in range(args.files):
                posted = await http.post(
                    f"/v1/accounts/res/dispatches/{dispatch['id']}/contacts",
                    headers={**headers, "Content-Type": "text/csv"},
                    content=csv_body(args.rows, n * args.rows),
                )
                posted.raise_for_status()
                total += posted.json()["counts"]["accepted"]
                await asyncio.sleep(args.pause)
            pushed = 0
            while pushed < total and time.perf_counter() - started < 1800:
                await asyncio.sleep(1)
                pushed = (await http.get(f"{sink_url}/_sink/stats")).json()["messages"]
            elapsed = time.perf_counter() - started
            if args.json_mb:
                contacts, size, i = [], 0, 10_000_000
                while size < args.json_mb * 1024 * 1024:
                    contact = {"email": f"j{i}@example.com", "external_id": f"j{i}"}
                    contacts.append(contact)
                    size += len(json.dumps(contact, separators=(",", ":"))) + 1
                    i += 1
                document = json.dumps({"contacts": contacts}, separators=(",", ":")).encode()
                before = peak_rss_mb(api.pid)
                posted = await http.post(
                    f"/v1/accounts/res/dispatches/{dispatch['id']}/contacts",
                    headers={**headers, "Content-Type": "application/json"},
                    content=document,
                )
                posted.raise_for_status()
                print(
                    f"JSON document of {len(document) / 2**20:.1f} MiB "
                    f"({len(contacts):,} contacts): API VmHWM {before:.0f} → "
                    f"{peak_rss_mb(api.pid):.0f} MiB"
                )
            stop.set()
            await sampling
        print(
            f"{total:,} contacts posted in {args.files} files, {pushed:,} messages pushed, "
            f"{elapsed:.0f} s"
        )
        for name, sampler in samplers.items():
            print(sampler.report(name, idle[name]))
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)
        await drop_database(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
