"""End to end on PostgreSQL: a contact file posted over HTTP → every message accepted by an
SQS-protocol sink, with N worker processes. Prints wall time and messages/s.

    .venv/bin/python -m bench.end_to_end --rows 200000 --workers 1
    .venv/bin/python -m bench.end_to_end --rows 200000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
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
    start_api,
)


async def csv_body(rows: int) -> AsyncIterator[bytes]:
    buffer = bytearray(b"email,external_id\n")
    for i in range(rows):
        buffer += b"e2e%d@example.com,x%d\n" % (i, i)
        if len(buffer) >= 65536:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="de-e2e-"))
    url, pg_name = await create_database("postgresql", workdir)
    env = env_for(
        url,
        workdir,
        DISPATCH_RUN_SCHEDULER="false",
        DISPATCH_CLAIM_INTERVAL_SECONDS="0.2",
        DISPATCH_RELAY_INTERVAL_SECONDS="0.2",
        AWS_EC2_METADATA_DISABLED="true",
    )
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sqs_sink", "--port", str(sink_port), "--keep-ids"],
        stdout=subprocess.DEVNULL,
    )
    sink_url = f"http://127.0.0.1:{sink_port}"
    processes: list[subprocess.Popen[bytes]] = [sink]
    try:
        key = migrate_and_key(env)
        api_port = free_port()
        processes.append(start_api(env, api_port))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=None) as http:
            await http.post("/v1/accounts", headers=headers, json={"id": "bench", "name": "B"})
            put = await http.put(
                "/v1/accounts/bench/queue-integration",
                headers=headers,
                json={
                    "kind": "sqs",
                    "queue_url": f"{sink_url}/123456789012/e2e",
                    "region": "us-east-1",
                    "endpoint_url": sink_url,
                    "access_key_id": "x",
                    "secret_access_key": "y",
                },
            )
            put.raise_for_status()
            policy = (
                await http.post(
                    "/v1/accounts/bench/policies",
                    headers=headers,
                    json={
                        "name": "E2E",
                        "lineup": [{"channel": "email", "delay": "PT0S"}],
                        "business_rules": {"time_zone": "UTC", "days": ALL_WEEK},
                    },
                )
            ).json()
            dispatch = (
                await http.post(
                    "/v1/accounts/bench/dispatches",
                    headers=headers,
                    json={
                        "questionnaire_id": "q",
                        "policy_id": policy["id"],
                        "token_validity": "P7D",
                        "message_templates": {policy["lineup"][0]["id"]: "tpl"},
                    },
                )
            ).json()
            for n in range(args.workers):
                processes.append(
                    subprocess.Popen(
                        [CLI, "worker"],
                        env={**env, "DISPATCH_WORKER_ID": f"w{n}"},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            started = time.perf_counter()
            posted = await http.post(
                f"/v1/accounts/bench/dispatches/{dispatch['id']}/contacts",
                headers={**headers, "Content-Type": "text/csv"},
                content=csv_body(args.rows),
            )
            uploaded = time.perf_counter() - started
            accepted = posted.json()["counts"]["accepted"]
            distinct = 0
            while distinct < accepted and time.perf_counter() - started < 3600:
                await asyncio.sleep(1)
                distinct = (await http.get(f"{sink_url}/_sink/stats")).json()["distinct_ids"]
            elapsed = time.perf_counter() - started
        print(
            f"end to end (pg, {args.workers} worker(s)): {accepted:,} contacts posted "
            f"(upload {uploaded:.1f} s), {distinct:,} distinct messages accepted by the sink "
            f"in {elapsed:.1f} s = {distinct / elapsed:,.0f} messages/s"
        )
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)
        await drop_database(pg_name)


if __name__ == "__main__":
    asyncio.run(main())
