"""A real PgBouncer in transaction mode in front of PostgreSQL (docs/operations.md, PgBouncer).

With DISPATCH_DB_PGBOUNCER=true the README walkthrough works through it end to end — the
`apikey create` CLI, an `api` process and a `worker` process, every one of them connected to
PgBouncer only — and the session limits still hold in every transaction. Without the
setting, asyncpg's named prepared statements collide on PgBouncer's shared server
connections. The pgbouncer.ini has no `ignore_startup_parameters`: nothing beyond
`pool_mode = transaction` is asked of the operator.

Needs the `pgbouncer` binary (Debian package `pgbouncer`, which .ci/run installs): skipped
without it, except in CI where it must be there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dispatch_engine.context import build_context
from dispatch_engine.db.engine import SessionLimits, allow_idle_in_transaction, build_engine
from dispatch_engine.db.migrate import upgrade
from tests.conftest import (
    ENCRYPTION_KEYS,
    HMAC_KEYS,
    drop_pg_database,
    fresh_database_url,
    make_settings,
    setup_account,
)
from tests.procs import BIN, free_port, send_now_dispatch, start_api, start_worker

CONTACTS = 200
# Fewer server connections than the processes' clients, so transactions of different
# client connections share server connections, as in production.
SERVER_POOL = 4


def _pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pgbouncer exited: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"pgbouncer did not listen: {log.read_text()}")


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(direct URL, URL through PgBouncer) of a migrated database."""
    binary = _pgbouncer_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pgbouncer is missing: .ci/run installs the Debian package")
        pytest.skip("pgbouncer not installed (apt-get install pgbouncer; .ci/run does)")
    direct_url, pg_name = fresh_database_url("postgresql", tmp_path_factory.mktemp("pgb"))
    assert pg_name is not None
    # Migrations go straight to PostgreSQL, as the docs ask of the migrate Job.
    upgrade(direct_url)
    target = direct_url.split("@", 1)[1]  # host:port/database
    host_port, database = target.split("/", 1)
    pg_host, pg_port = host_port.split(":")
    user = direct_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[0]
    # PgBouncer refuses to run as root and drops to `-u`: its files must be readable then.
    config_dir = Path(tempfile.mkdtemp(prefix="de-pgbouncer-"))
    config_dir.chmod(0o755)
    port = free_port()
    (config_dir / "userlist.txt").write_text(f'"{user}" ""\n')
    (config_dir / "pgbouncer.ini").write_text(
        f"""[databases]
{database} = host={pg_host} port={pg_port} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {config_dir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {SERVER_POOL}
max_client_conn = 500
"""
    )
    for path in config_dir.iterdir():
        path.chmod(0o644)
    log = config_dir / "pgbouncer.log"
    command = [binary]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    process = subprocess.Popen(
        [*command, str(config_dir / "pgbouncer.ini")],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, process, log)
        yield direct_url, direct_url.replace(host_port, f"127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(config_dir, ignore_errors=True)
        drop_pg_database(pg_name)


def _cli(url: str, data_dir: Path, *args: str) -> str:
    env = {
        **os.environ,
        "DISPATCH_DATABASE_URL": url,
        "DISPATCH_DB_PGBOUNCER": "true",
        "DISPATCH_DATA_DIR": str(data_dir),
    }
    env.update(DISPATCH_ENCRYPTION_KEYS=ENCRYPTION_KEYS, DISPATCH_HMAC_KEYS=HMAC_KEYS)
    done = subprocess.run(
        [str(BIN / "dispatch-engine"), *args], env=env, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.fixture
async def http_api(
    databases: tuple[str, str], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, subprocess.Popen[bytes], Path]]:
    _, bouncer_url = databases
    port = free_port()
    log = tmp_path / "api.log"
    api = start_api(bouncer_url, log, port, db_pgbouncer="true")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert api.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            yield http, api, log
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)


async def test_the_walkthrough_runs_through_pgbouncer(
    databases: tuple[str, str],
    http_api: tuple[httpx.AsyncClient, subprocess.Popen[bytes], Path],
    tmp_path: Path,
) -> None:
    _, bouncer_url = databases
    http, _, api_log = http_api
    key = _cli(bouncer_url, tmp_path, "apikey", "create", "--role", "admin")
    admin = {"Authorization": f"Bearer {key}"}
    await setup_account(http, admin)  # the account and its local queue
    dispatch = await send_now_dispatch(http, admin, fatigue={"pending_token": {"enabled": False}})
    body = "email,external_id\n" + "".join(f"p{i}@example.com,c{i}\n" for i in range(CONTACTS))
    uploaded = await http.post(
        f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
        headers={**admin, "Content-Type": "text/csv"},
        content=body,
    )
    assert uploaded.status_code == 202, uploaded.text
    assert uploaded.json()["counts"]["accepted"] == CONTACTS

    metrics_port = free_port()
    worker_log = tmp_path / "worker.log"
    worker = start_worker(
        bouncer_url,
        worker_log,
        db_pgbouncer="true",
        claim_batch_size="50",
        claim_interval_seconds="0.2",
        relay_interval_seconds="0.2",
        metrics_port=str(metrics_port),
        host="127.0.0.1",
    )
    try:
        deadline = time.monotonic() + 120
        sent = 0
        while sent < CONTACTS:
            assert worker.poll() is None, worker_log.read_text()
            assert time.monotonic() < deadline, worker_log.read_text()
            await asyncio.sleep(0.5)
            stats = await http.get(
                f"/v1/accounts/acme/dispatches/{dispatch['id']}/stats", headers=admin
            )
            assert stats.status_code == 200, stats.text
            sent = stats.json()["messages"].get("sent", 0)
        # Marked sent with its outbox row; the relay puts it on the local queue next.
        queued: list[dict[str, object]] = []
        while len(queued) < CONTACTS:
            assert time.monotonic() < deadline, worker_log.read_text()
            received = await http.get(
                "/v1/accounts/acme/queue/messages",
                headers=admin,
                params={"max": 1000, "visibility": 300},
            )
            assert received.status_code == 200, received.text
            queued += received.json()
            if len(queued) < CONTACTS:
                await asyncio.sleep(0.5)
        assert len({message["message_id"] for message in queued}) == CONTACTS
        # The worker's own metrics port (DISPATCH_METRICS_PORT) serves its counters.
        scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'dispatch_queue_push_total{kind="local",outcome="ok"}' in scraped
        assert "dispatch_outbox_depth" in scraped
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker_log.read_text()
    for log in (api_log, worker_log):
        text_ = log.read_text()
        assert "prepared statement" not in text_, text_
        assert "job_failed" not in text_, text_


async def test_session_limits_hold_in_every_transaction_through_pgbouncer(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    _, bouncer_url = databases
    settings = make_settings(
        bouncer_url,
        tmp_path,
        db_pgbouncer=True,
        claim_lease_seconds=45,
        db_statement_timeout_seconds=123,
        worker_id="limits-check",
    )
    context = build_context(settings)
    other = build_engine(bouncer_url, pgbouncer=True)  # no limits: a session without them
    try:

        async def settings_seen() -> tuple[str, str, str]:
            async with context.sessions() as session, session.begin():
                row = (
                    await session.execute(
                        text(
                            "SELECT current_setting('statement_timeout'), "
                            "current_setting('idle_in_transaction_session_timeout'), "
                            "current_setting('application_name')"
                        )
                    )
                ).one()
                return row[0], row[1], row[2]

        async def plain_transaction() -> str:
            async with other.begin() as connection:
                return str((await connection.execute(text("SHOW statement_timeout"))).scalar())

        for _ in range(5):  # several transactions, on whichever server connection
            seen = await asyncio.gather(settings_seen(), settings_seen(), plain_transaction())
            for statement, idle, application in seen[:2]:
                assert (statement, idle) == ("123s", "45s")
                assert application == "dispatch-engine limits-check"
            # SET LOCAL stays in its transaction: a server connection comes back clean.
            assert seen[2] == "0"

        async with context.sessions() as session, session.begin():
            await allow_idle_in_transaction(session, 90)
            idle = (
                await session.execute(text("SHOW idle_in_transaction_session_timeout"))
            ).scalar()
            assert idle == "90s"
    finally:
        await other.dispose()
        await context.aclose()


def test_through_pgbouncer_only_application_name_is_a_startup_parameter() -> None:
    limits = SessionLimits(idle_in_transaction_seconds=60, statement_seconds=300)
    assert set(limits.connect_args(pgbouncer=True)["server_settings"]) == {"application_name"}
    direct = limits.connect_args()["server_settings"]
    assert {"statement_timeout", "idle_in_transaction_session_timeout"} <= set(direct)


async def test_without_the_setting_prepared_statements_break(
    databases: tuple[str, str],
) -> None:
    """The failure DISPATCH_DB_PGBOUNCER exists for (and proof that this PgBouncer really
    multiplexes): asyncpg's named statements, per client connection `__asyncpg_stmt_1__`,
    `…_2__`…, collide on the server connections the clients share, or are missing on the
    one the next statement runs on."""
    _, bouncer_url = databases
    engines = [build_engine(bouncer_url) for _ in range(3)]

    async def work(index: int) -> None:
        engine = engines[index % len(engines)]
        for value in range(30):
            async with engine.begin() as connection:
                await connection.execute(text("SELECT :v + 1"), {"v": value})
                await connection.execute(
                    text("SELECT count(*) FROM pg_class WHERE relpages > :p"), {"p": value}
                )

    try:
        with pytest.raises(DBAPIError, match="prepared statement"):
            await asyncio.gather(*(work(index) for index in range(9)))
    finally:
        for engine in engines:
            await engine.dispose()


async def test_pgbouncer_really_pools_in_transaction_mode(databases: tuple[str, str]) -> None:
    """Guard against a vacuous run: the server sees at most the pool size of connections
    from PgBouncer while ten clients are connected."""
    direct_url, bouncer_url = databases
    raw = bouncer_url.replace("postgresql+asyncpg://", "postgresql://")
    clients = [await asyncpg.connect(raw, statement_cache_size=0) for _ in range(10)]
    try:
        pids = set()
        for client in clients:
            async with client.transaction():
                pids.add(await client.fetchval("SELECT pg_backend_pid()"))
        assert len(pids) <= SERVER_POOL
    finally:
        for client in clients:
            await client.close()
    assert direct_url != bouncer_url
