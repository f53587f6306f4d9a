"""Soak: steady ingest + dispatch for a while, with real `api` and `worker` processes.

Posts `--rate` contacts per second (JSON batches over HTTP) for `--minutes`, while a
"vendor" pulls and acks the local queue. Prints the RSS of each process after warm-up and
at the end, and the p99 due→pushed latency from the worker's Prometheus histogram.

    .venv/bin/python -m bench.soak --minutes 30 --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import (
    ALL_WEEK,
    CLI,
    create_database,
    drop_database,
    env_for,
    free_port,
    migrate_and_key,
    rss_mb,
    setup_dispatch,
    start_api,
)


def p99_from_histogram(text: str, name: str) -> float | None:
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            label = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append(
                (float("inf") if label == "+Inf" else float(label), float(line.rsplit(" ", 1)[1]))
            )
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for bound, count in sorted(buckets):
        if count >= 0.99 * total:
            return bound
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=200, help="contacts per second")
    parser.add_argument("--warmup", type=float, default=5, help="minutes before the start RSS")
    parser.add_argument(
        "--trace-worker",
        type=Path,
        default=None,
        help="run the worker under tracemalloc and write its growth to this file",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="de-soak-"))
    url, pg_name = await create_database("postgresql", workdir)
    metrics_port = free_port()
    env = env_for(
        url, workdir, DISPATCH_RUN_SCHEDULER="false", DISPATCH_METRICS_PORT=str(metrics_port)
    )
    worker = None
    api = None
    try:
        key = migrate_and_key(env)
        port = free_port()
        api = start_api(env, port)
        command = [CLI, "worker"]
        if args.trace_worker is not None:
            command = [
                sys.executable,
                "-m",
                "bench.memtrace_worker",
                "--out",
                str(args.trace_worker),
                "--warmup",
                str(args.warmup * 60),
            ]
        worker = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            _, dispatch = await setup_dispatch(
                http,
                headers,
                policy={
                    "name": "Soak",
                    "business_rules": {"time_zone": "UTC", "days": ALL_WEEK},
                    "lineup": [
                        {"channel": "email", "delay": "PT0S"},
                        {"channel": "email", "delay": "PT1H"},
                    ],
                },
            )
            started = time.monotonic()
            end = started + args.minutes * 60
            # Warm-up: pools, statement caches and allocator arenas fill in the first minutes
            # (the RSS series printed at the end shows it); growth is measured after it.
            warm = started + min(args.warmup * 60, args.minutes * 60 / 4)
            rss_start: tuple[float, float] | None = None
            samples: list[tuple[float, float, float]] = []  # minute, api MB, worker MB
            next_sample = started
            posted = pulled = 0
            n = 0
            while time.monotonic() < end:
                tick = time.monotonic()
                contacts = [{"email": f"s{n + i}@example.com"} for i in range(args.rate)]
                n += args.rate
                response = await http.post(
                    f"/v1/accounts/bench/dispatches/{dispatch}/contacts",
                    headers=headers,
                    json={"contacts": contacts},
                )
                posted += response.json()["counts"]["accepted"]
                while True:  # the vendor drains the local queue
                    batch = (
                        await http.get(
                            "/v1/accounts/bench/queue/messages?max=1000", headers=headers
                        )
                    ).json()
                    if not batch:
                        break
                    await http.post(
                        "/v1/accounts/bench/queue/ack",
                        headers=headers,
                        json={"receipts": [m["receipt"] for m in batch]},
                    )
                    pulled += len(batch)
                if rss_start is None and time.monotonic() >= warm:
                    rss_start = (rss_mb(api.pid), rss_mb(worker.pid))
                if time.monotonic() >= next_sample:
                    minute = (time.monotonic() - started) / 60
                    samples.append((minute, rss_mb(api.pid), rss_mb(worker.pid)))
                    next_sample += max(60.0, args.minutes * 60 / 30)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            rss_end = (rss_mb(api.pid), rss_mb(worker.pid))
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        p99 = p99_from_histogram(metrics, "dispatch_pipeline_latency_seconds")
        assert rss_start is not None
        print(
            f"soak: {args.minutes:g} min at {args.rate} contacts/s; {posted:,} contacts posted, "
            f"{pulled:,} messages pulled by the vendor"
        )
        for label, before, after in zip(("api", "worker"), rss_start, rss_end, strict=True):
            print(
                f"  {label} RSS after warm-up {before:.0f} MB, at end {after:.0f} MB "
                f"({(after - before) / before * 100:+.1f} %)"
            )
        print(f"  p99 due→pushed latency ≤ {p99} s (histogram bucket bound)")
        for index, label in ((1, "api"), (2, "worker")):
            series = ", ".join(f"{s[0]:.0f}m {s[index]:.0f}" for s in samples)
            print(f"  {label} RSS MB over time: {series}")
    finally:
        for process in (worker, api):
            if process is not None:
                process.terminate()
                process.wait(20)
        await drop_database(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
