"""Shared helpers for the benchmarks: fresh PostgreSQL databases, a service subprocess."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

PG_ADMIN = os.environ.get("DISPATCH_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLI = str(Path(sys.executable).with_name("dispatch-engine"))
KEYS = {
    "DISPATCH_ENCRYPTION_KEYS": "b1:"
    + base64.b64encode(hashlib.sha256(b"bench-enc").digest()).decode(),
    "DISPATCH_HMAC_KEYS": "b1:" + base64.b64encode(hashlib.sha256(b"bench-mac").digest()).decode(),
}
ALL_WEEK = {
    d: [{"start": "00:00", "end": "24:00"}]
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}


async def create_database(kind: str, workdir: Path) -> tuple[str, str | None]:
    """(SQLAlchemy URL, PostgreSQL database name to drop) for an empty database."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'bench.db'}", None
    name = f"de_bench_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(PG_ADMIN)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}", name


async def drop_database(name: str | None) -> None:
    if name:
        connection = await asyncpg.connect(PG_ADMIN)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


def raw_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def env_for(url: str, workdir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **KEYS,
        "DISPATCH_DATABASE_URL": url,
        "DISPATCH_DATA_DIR": str(workdir),
        "DISPATCH_LOG_LEVEL": "WARNING",
        # The SQS sink listens on loopback: allow-listed, or the senders refuse it.
        "DISPATCH_WEBHOOK_ALLOW_HTTP": "true",
        "DISPATCH_WEBHOOK_ALLOWLIST": "127.0.0.1/32",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def migrate_and_key(env: dict[str, str]) -> str:
    subprocess.run([CLI, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [CLI, "apikey", "create", "--role", "admin"], env=env, check=True, capture_output=True
    )
    return out.stdout.decode().strip()


def start_api(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [CLI, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not start")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`, from /proc."""
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by every local `postgres` process (backends, WAL writer,
    checkpointer), read from /proc; None when PostgreSQL is not on this machine."""
    ticks, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if not stat.read_text().split(")", 1)[0].endswith("(postgres"):
                continue
            ticks += process_cpu_seconds(int(stat.parent.name))
        except (OSError, IndexError):
            continue
        found = True
    return ticks if found else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def setup_dispatch(
    http: httpx.AsyncClient, headers: dict[str, str], *, policy: dict[str, object]
) -> tuple[str, str]:
    """Account `bench` with a local queue, the given policy and a dispatch on it."""
    await http.post("/v1/accounts", headers=headers, json={"id": "bench", "name": "Bench"})
    await http.put("/v1/accounts/bench/queue-integration", headers=headers, json={"kind": "local"})
    created = await http.post("/v1/accounts/bench/policies", headers=headers, json=policy)
    created.raise_for_status()
    body = created.json()
    dispatch = await http.post(
        "/v1/accounts/bench/dispatches",
        headers=headers,
        json={
            "questionnaire_id": "q-bench",
            "policy_id": body["id"],
            "token_validity": "P30D",
            "message_templates": {m["id"]: f"tpl-{m['position']}" for m in body["lineup"]},
        },
    )
    dispatch.raise_for_status()
    return body["id"], dispatch.json()["id"]


def run(main: object) -> None:
    asyncio.run(main)  # type: ignore[arg-type]
