"""Shared fixtures: every API/store test runs on SQLite and, when reachable, on PostgreSQL.

Set DISPATCH_TEST_REQUIRE_PG=1 (as .ci/run does) to fail instead of skipping when
PostgreSQL is down. DISPATCH_TEST_PG_URL points at a server where databases may be created.
The run says whether PostgreSQL was used, in its header and its summary.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from dispatch_engine.api.app import create_app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext, build_context
from dispatch_engine.db.migrate import upgrade
from dispatch_engine.models import Base
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.services.api_keys import create_api_key
from dispatch_engine.settings import Settings

PG_URL = os.environ.get("DISPATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("DISPATCH_TEST_REQUIRE_PG") == "1"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def _key_ring(seed: bytes) -> str:
    """Fixed test keys: every import of this module (and every subprocess) agrees on them."""
    return f"t1:{base64.b64encode(hashlib.sha256(seed).digest()).decode()}"


ENCRYPTION_KEYS = _key_ring(b"dispatch-engine test encryption key")
HMAC_KEYS = _key_ring(b"dispatch-engine test hmac key")


#: What the PostgreSQL tests found this run, for the summary line.
_PG_RUN = {"used": False, "skipped": False}


def _pg_where() -> str:
    """host:port of the test server (never its user or password)."""
    parsed = urlsplit(PG_URL)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 5432}"


def pytest_report_header(config: pytest.Config) -> str:
    where = _pg_where()
    if _pg_reachable():
        return f"PostgreSQL: reachable ({where}): PostgreSQL tests run there"
    if REQUIRE_PG:
        return f"PostgreSQL: NOT reachable ({where}) but required: PostgreSQL tests will fail"
    return f"PostgreSQL: NOT reachable ({where}) - PostgreSQL tests skipped"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    where = _pg_where()
    if _PG_RUN["used"]:
        line = f"PostgreSQL: used ({where})"
    elif _PG_RUN["skipped"]:
        line = f"PostgreSQL: NOT reachable ({where}) - PostgreSQL tests skipped"
    else:
        line = "PostgreSQL: not used (no selected test needed it)"
    terminalreporter.write_sep("-", line)


def _pg_reachable() -> bool:
    async def probe() -> None:
        connection = await asyncpg.connect(PG_URL, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
        return True
    except Exception:
        return False


def _create_pg_database() -> tuple[str, str]:
    name = f"de_test_{secrets.token_hex(6)}"

    async def create() -> None:
        connection = await asyncpg.connect(PG_URL)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    base = PG_URL.rsplit("/", 1)[0]
    return name, f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


def drop_pg_database(name: str) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(PG_URL)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


def fresh_database_url(kind: str, tmp_dir: Path) -> tuple[str, str | None]:
    """An empty database of the kind: (async URL, PostgreSQL database name to drop)."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_dir / f'{secrets.token_hex(4)}.db'}", None
    if not _pg_reachable():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required but not reachable at {PG_URL}")
        _PG_RUN["skipped"] = True
        pytest.skip("PostgreSQL not reachable")
    name, url = _create_pg_database()
    _PG_RUN["used"] = True
    return url, name


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_url(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per kind for the whole run; tests empty it before use."""
    url, pg_name = fresh_database_url(db_kind, tmp_path_factory.mktemp(db_kind))
    upgrade(url)
    yield url
    if pg_name:
        drop_pg_database(pg_name)


def make_settings(url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "dev",
        "database_url": url,
        "data_dir": data_dir,
        "encryption_keys": ENCRYPTION_KEYS,
        "hmac_keys": HMAC_KEYS,
        "webhook_allow_http": True,
        "webhook_allowlist": ["127.0.0.1/32", "localhost"],
        "run_scheduler": False,
        # Smaller than the default (10,000) so tests that cross chunk boundaries stay quick.
        "upload_batch_rows": 2000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def empty_database(context: AppContext) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with context.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def context(
    migrated_url: str, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[AppContext]:
    ctx = build_context(make_settings(migrated_url, tmp_path), clock)
    await empty_database(ctx)
    yield ctx
    await ctx.aclose()


@pytest.fixture
async def client(context: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(context.settings, context=context)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def workers(context: AppContext) -> AsyncIterator[Callable[[], Worker]]:
    """Build workers on demand (after a test has tuned the settings); all are shut down."""
    built: list[Worker] = []

    def make() -> Worker:
        runner = Worker(context)
        built.append(runner)
        return runner

    yield make
    for runner in built:
        await runner.shutdown(0)


@pytest.fixture
def worker(workers: Callable[[], Worker]) -> Worker:
    """A worker on the test's context (its jobs are called by the test, no scheduler)."""
    return workers()


async def new_key(context: AppContext, role: str, account: str | None = None) -> str:
    async with context.sessions() as session, session.begin():
        _, full = await create_api_key(
            session, role=role, account_id=account, name=None, now=context.clock.now()
        )
    return full


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def admin(context: AppContext) -> dict[str, str]:
    return bearer(await new_key(context, "admin"))


async def setup_account(
    http: httpx.AsyncClient, headers: dict[str, str], account: str = "acme", *, queue: bool = True
) -> None:
    response = await http.post(
        "/v1/accounts",
        headers=headers,
        json={
            "id": account,
            "name": account.title(),
            "owner": {
                "name": "Olivia Owner",
                "email": "owner@example.com",
                "phone": "+14155550100",
            },
            "admins": [{"name": "Adam Admin", "email": "admin@example.com"}],
        },
    )
    assert response.status_code == 201, response.text
    if queue:
        response = await http.put(
            f"/v1/accounts/{account}/queue-integration", headers=headers, json={"kind": "local"}
        )
        assert response.status_code == 200, response.text


async def create_policy(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    account: str = "acme",
    **body: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "Default",
        "lineup": [
            {"channel": "email", "delay": "PT0S"},
            {"channel": "email", "delay": "P2D"},
            {"channel": "sms", "delay": "P3D"},
        ],
    }
    payload.update(body)
    response = await http.post(f"/v1/accounts/{account}/policies", headers=headers, json=payload)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def templates_for(policy: dict[str, Any]) -> dict[str, str]:
    return {m["id"]: f"tpl-{m['position']}" for m in policy["lineup"]}


async def report_incident(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """An incident to refer to (pauses and resumes may name one); returns its id."""
    response = await http.post(
        "/v1/incidents", headers=headers, json={"title": "Queue down", "service": "SQS relay"}
    )
    assert response.status_code == 201, response.text
    incident_id: str = response.json()["id"]
    return incident_id
