#!/usr/bin/env python3
"""Fuzz every operation of /openapi.json with schemathesis; fail on any 5xx answer.

    .venv/bin/python scripts/fuzz_api.py --db postgresql --max-examples 100 --max-time 600

Serves `dispatch-engine api` with uvicorn on 127.0.0.1 (a free port) over a fresh database
(a SQLite file, or a PostgreSQL database created on a loopback server and dropped after),
creates an admin key and a small account to aim at (account, policy, dispatch, contacts,
incident, pause), then runs `schemathesis run` with that key. Path parameters mostly take the
seeded ids (so requests get past "not found" into the code behind them) and sometimes
generated ones. Schemathesis only ever talks to the loopback server; the one operation that
would call out of the machine (queue-integration verify, which probes a real queue) is
left out, and no worker runs, so no webhook is called.

Prints one JSON line: db, requests, server_errors, by_status, seconds. Exit 1 on any 5xx.
tests/api/test_fuzz.py runs it briefly on both databases.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

BIN = Path(sys.executable).parent
DEFAULT_PG = os.environ.get("DISPATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SKIPPED_OPERATIONS = r"/queue-integration/verify$"  # probes a real queue: not a loopback target


def _require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise SystemExit(f"refusing a non-loopback target: {host!r}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _key_ring() -> str:
    return f"f1:{base64.b64encode(secrets.token_bytes(32)).decode()}"


async def _pg(admin_url: str, statement: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _seed(base: str, headers: dict[str, str]) -> dict[str, list[str]]:
    """A small account for the fuzzer to aim at; returns seeded ids by path parameter name."""
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:

        def call(method: str, path: str, **kwargs: Any) -> Any:
            response = http.request(method, path, **kwargs)
            response.raise_for_status()
            return response.json()

        owner = {"name": "Olivia Owner", "email": "owner@example.com", "phone": "+14155550100"}
        call("POST", "/v1/accounts", json={"id": "acme", "name": "Acme", "owner": owner})
        call("PUT", "/v1/accounts/acme/queue-integration", json={"kind": "local"})
        lineup = [{"channel": "email", "delay": "PT0S"}, {"channel": "sms", "delay": "P1D"}]
        policy = call("POST", "/v1/accounts/acme/policies", json={"name": "P", "lineup": lineup})
        steps = [m["id"] for m in policy["lineup"]]
        dispatch = call(
            "POST",
            "/v1/accounts/acme/dispatches",
            json={
                "questionnaire_id": "q-1",
                "policy_id": policy["id"],
                "token_validity": "P14D",
                "message_templates": dict.fromkeys(steps, "tpl"),
            },
        )
        batch = call(
            "POST",
            f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
            headers={"Content-Type": "text/csv"},
            content=b"email,mobile,external_id\nann@example.com,+33612345678,c-1\n",
        )
        invites = call("GET", "/v1/accounts/acme/invites", params={"external_id": "c-1"})
        incident = call("POST", "/v1/incidents", json={"title": "Queue down", "service": "SQS"})
        pause = call("POST", "/v1/admin/pauses", json={"scope": "channel", "target": "sms"})
        spare = call("POST", "/v1/api-keys", json={"role": "backend"})
    return {
        "key_id": [spare["id"]],
        "account_id": ["acme"],
        "policy_id": [policy["id"]],
        "message_id": steps,
        "dispatch_id": [dispatch["id"]],
        "batch_id": [batch["batch"]],
        "invite_id": [i["id"] for i in invites],
        "incident_id": [incident["id"]],
        "pause_id": [pause["id"]],
    }


def _config(seeded: dict[str, list[str]]) -> str:
    """schemathesis.toml: each seeded path parameter takes a seeded id 80 % of the time; a
    key revocation only ever revokes the spare key (the run's own key would end the run:
    the fuzzer finds its id in GET /v1/api-keys)."""
    spare = seeded.pop("key_id")[0]
    lines = []
    for name, values in seeded.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.8 }}' for name in seeded]
    lines += ["", "[[operations]]", 'include-name = "DELETE /v1/api-keys/{key_id}"']
    lines.append(f'parameters = {{ "path.key_id" = "{spare}" }}')
    return "\n".join(lines) + "\n"


def _wait_ready(base: str, server: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the API process exited during start-up")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the API did not start")


def fuzz(
    db: str,
    *,
    max_examples: int,
    max_time: int,
    workers: int,
    seed: int | None,
    pg_url: str,
    keep: Path | None = None,
) -> dict[str, Any]:
    """One run against a fresh database of kind `db`; returns the figures."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as tmp:
        work = Path(tmp)
        pg_name = None
        if db == "sqlite":
            database_url = f"sqlite+aiosqlite:///{work / 'fuzz.db'}"
        else:
            _require_loopback(pg_url)
            pg_name = f"de_fuzz_{secrets.token_hex(6)}"
            asyncio.run(_pg(pg_url, f'CREATE DATABASE "{pg_name}"'))
            base_url = pg_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            database_url = f"{base_url}/{pg_name}"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        _require_loopback(base)
        env = {
            **os.environ,
            "DISPATCH_ENV": "dev",
            "DISPATCH_DATABASE_URL": database_url,
            "DISPATCH_DATA_DIR": str(work),
            "DISPATCH_ENCRYPTION_KEYS": _key_ring(),
            "DISPATCH_HMAC_KEYS": _key_ring(),
            "DISPATCH_LOG_LEVEL": "WARNING",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        server = None
        try:
            subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
                [str(BIN / "dispatch-engine"), "migrate"], env=env, check=True, capture_output=True
            )  # the store first: `apikey create` no longer makes one (it would be the wrong one)
            key = subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
                [str(BIN / "dispatch-engine"), "apikey", "create", "--role", "admin"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            log = (work / "api.log").open("wb")
            server = subprocess.Popen(  # noqa: S603
                [str(BIN / "dispatch-engine"), "api", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            _wait_ready(base, server)
            auth = {"Authorization": f"Bearer {key}"}
            config = work / "schemathesis.toml"
            config.write_text(_config(_seed(base, auth)))
            har = work / "requests.har"
            command = [
                str(BIN / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                "not_a_server_error",
                "--exclude-path-regex",
                SKIPPED_OPERATIONS,
                "--max-examples",
                str(max_examples),
                "--max-time",
                str(max_time),
                "--workers",
                str(workers),
                "--request-timeout",
                "30",
                "--generation-database",
                "none",
                "--report",
                "har",
                "--report-har-path",
                str(har),
                "--no-color",
                *(["--seed", str(seed)] if seed is not None else []),
            ]
            run = subprocess.run(  # noqa: S603
                command, env=env, cwd=work, capture_output=True, text=True, check=False
            )
            entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
            statuses = Counter(entry["response"]["status"] for entry in entries)
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
                log.close()
            if pg_name:
                asyncio.run(_pg(pg_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                for name in ("requests.har", "api.log"):
                    if (work / name).exists():
                        shutil.copy(work / name, keep / name)
        server_errors = sum(n for status, n in statuses.items() if status >= 500)
        if server_errors or not statuses or run.returncode not in (0, 1):
            sys.stderr.write(run.stdout[-20_000:] + run.stderr[-5_000:])
        return {
            "db": db,
            "requests": sum(statuses.values()),
            "server_errors": server_errors,
            "by_status": dict(sorted(statuses.items())),
            "schemathesis_exit": run.returncode,
            "seconds": round(time.monotonic() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--max-time", type=int, default=600, help="seconds for schemathesis")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a loopback server (admin URL)")
    parser.add_argument("--keep", type=Path, help="copy the HAR and the API log here")
    args = parser.parse_args()
    figures = fuzz(
        args.db,
        max_examples=args.max_examples,
        max_time=args.max_time,
        workers=args.workers,
        seed=args.seed,
        pg_url=args.pg_url,
        keep=args.keep,
    )
    print(json.dumps(figures))
    sys.exit(1 if figures["server_errors"] else 0)


if __name__ == "__main__":
    main()
