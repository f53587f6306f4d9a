"""Alembic: one head, up/down/up on both databases, and the models agree with the migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection

from dispatch_engine.context import build_context
from dispatch_engine.db.engine import build_engine
from dispatch_engine.db.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from dispatch_engine.incidents.communications import open_recipient, recipient_hash
from dispatch_engine.models import (
    Account,
    AuditRecord,
    Base,
    Incident,
    IncidentCommunication,
    Policy,
    PolicyVersion,
)
from dispatch_engine.models.base import table_of
from dispatch_engine.rules.delays import Delay
from dispatch_engine.schemas.durations import format_delay, format_duration
from tests.conftest import (
    ENCRYPTION_KEYS,
    HMAC_KEYS,
    drop_pg_database,
    fresh_database_url,
    make_settings,
)


@pytest.fixture
def empty_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    url, pg_name = fresh_database_url(db_kind, tmp_path)
    yield url
    if pg_name:
        drop_pg_database(pg_name)


def _inspect(url: str) -> tuple[set[str], str | None, list[Any]]:
    """(tables, current revision, autogenerate diff against the models)."""

    def run(connection: Connection) -> tuple[set[str], list[Any]]:
        tables = set(inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return tables, compare_metadata(context, Base.metadata)

    async def go() -> tuple[set[str], str | None, list[Any]]:
        engine = build_engine(url)
        try:
            async with engine.connect() as connection:
                tables, diff = await connection.run_sync(run)
            revision = await current_revision(engine)
        finally:
            await engine.dispose()
        return tables, revision, diff

    return asyncio.run(go())


def test_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///:memory:"))
    heads = script.get_heads()
    assert len(heads) == 1, heads
    assert head_revision("sqlite+aiosqlite:///:memory:") == heads[0]
    # Every revision is reachable from the head down to a single base.
    assert len(script.get_bases()) == 1
    walked = list(script.walk_revisions())
    assert walked[-1].down_revision is None


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    head = head_revision(empty_url)
    tables, revision, _ = _inspect(empty_url)
    assert tables == set()
    assert revision is None

    upgrade(empty_url)
    tables, revision, _ = _inspect(empty_url)
    assert revision == head
    model_tables = set(Base.metadata.tables)
    assert model_tables <= tables

    downgrade(empty_url, "base")
    tables, revision, _ = _inspect(empty_url)
    assert tables <= {"alembic_version"}, tables
    assert revision is None

    upgrade(empty_url)
    tables, revision, _ = _inspect(empty_url)
    assert revision == head
    assert model_tables <= tables

    upgrade(empty_url)  # already at head: a no-op
    assert _inspect(empty_url)[1] == head


def test_models_and_migrations_agree(empty_url: str) -> None:
    upgrade(empty_url)
    _, _, diff = _inspect(empty_url)
    assert diff == [], "models and migrations differ (write a migration):\n" + "\n".join(
        map(str, diff)
    )


def _reloptions(url: str) -> dict[str, list[str]]:
    async def go() -> dict[str, list[str]]:
        engine = build_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.exec_driver_sql(
                    "SELECT relname, reloptions FROM pg_class "
                    "WHERE relname IN ('messages', 'outbox', 'invites')"
                )
                return {name: sorted(options or []) for name, options in rows}
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_queue_tables_are_vacuumed_and_analyzed_sooner(empty_url: str, db_kind: str) -> None:
    if db_kind != "postgresql":
        pytest.skip("autovacuum storage parameters are PostgreSQL's")
    upgrade(empty_url)
    assert _reloptions(empty_url) == {
        "messages": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_scale_factor=0.02",
        ],
        "outbox": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_scale_factor=0.01",
        ],
        "invites": ["autovacuum_analyze_scale_factor=0.02"],
    }
    downgrade(empty_url, "0005")
    assert _reloptions(empty_url) == {"messages": [], "outbox": [], "invites": []}


COMMUNICATION = "com_before0009"
RECIPIENT = "early.recipient@example.com"


def _run_sql(url: str, work: Callable[[Connection], Any]) -> Any:
    async def go() -> Any:
        engine = build_engine(url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _seed_plain_communication(connection: Connection) -> None:
    """A communication and its audit row as revision 0008 stored them: in clear."""
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    connection.execute(
        insert(table_of(Incident)).values(
            id="inc_before0009", title="t", service="s", started_at=at, reported_at=at,
            updated_at=at,
        )
    )  # fmt: skip
    connection.execute(
        insert(table_of(IncidentCommunication)).values(
            id=COMMUNICATION, incident_id="inc_before0009", account_id="acme",
            channel="direct_email", recipient=RECIPIENT, by="Carl", at=at, what="Told",
            recorded_at=at,
        )
    )  # fmt: skip
    connection.execute(
        insert(table_of(AuditRecord)).values(
            id="aud_before0009", at=at, action="incident.communication",
            target_type="communication", target_id=COMMUNICATION,
            after={"id": COMMUNICATION, "recipient": RECIPIENT, "what": "Told"},
        )
    )  # fmt: skip


def _stored(connection: Connection) -> tuple[str, dict[str, Any]]:
    recipient = connection.execute(select(table_of(IncidentCommunication).c.recipient)).scalar_one()
    after = connection.execute(select(table_of(AuditRecord).c.after)).scalar_one()
    return str(recipient), dict(after)


def test_0009_seals_the_recipients_stored_before_it(
    empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written in clear are sealed with the settings' key ring, and their audit rows
    keep a keyed hash instead of the recipient; downgrade opens them again."""
    monkeypatch.setenv("DISPATCH_ENCRYPTION_KEYS", ENCRYPTION_KEYS)
    monkeypatch.setenv("DISPATCH_HMAC_KEYS", HMAC_KEYS)
    monkeypatch.setenv("DISPATCH_DATA_DIR", str(tmp_path))
    context = build_context(make_settings(empty_url, tmp_path))  # the service's rings
    upgrade(empty_url, "0008")
    _run_sql(empty_url, _seed_plain_communication)

    upgrade(empty_url)
    recipient, after = _run_sql(empty_url, _stored)
    assert RECIPIENT not in recipient and RECIPIENT not in str(after)
    assert open_recipient(context.cipher, COMMUNICATION, recipient) == RECIPIENT
    assert after == {
        "id": COMMUNICATION,
        "what": "Told",
        "recipient_hash": recipient_hash(context.hasher, RECIPIENT),
    }

    downgrade(empty_url, "0008")
    assert _run_sql(empty_url, _stored)[0] == RECIPIENT
    asyncio.run(context.aclose())


# (stored seconds before 0013, calendar days and exact seconds after it, the API's text)
STORED_DELAYS = [
    (0, 0, 0, "PT0S"),
    (3_600, 0, 3_600, "PT1H"),
    (86_399, 0, 86_399, "PT23H59M59S"),
    (86_400, 1, 0, "P1D"),
    (93_600, 1, 7_200, "P1DT2H"),
    (604_800, 7, 0, "P7D"),
    (30 * 86_400, 30, 0, "P30D"),
]


def _seed_lineup(connection: Connection) -> None:
    """A policy whose lineup revision 0012 stored as exact seconds."""
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    connection.execute(
        insert(table_of(Account)).values(id="acme", name="Acme", created_at=at, updated_at=at)
    )
    connection.execute(
        insert(table_of(Policy)).values(
            id="pol_before0013", account_id="acme", name="P", name_key="p",
            created_at=at, updated_at=at,
        )
    )  # fmt: skip
    for index, (seconds, _, _, _) in enumerate(STORED_DELAYS, start=1):
        connection.execute(
            text(
                "INSERT INTO lineup_messages (id, policy_id, position, channel, delay_seconds, "
                "created_at) VALUES (:id, 'pol_before0013', :position, 'email', :seconds, :at)"
            ),
            {"id": f"msg_{index}", "position": index, "seconds": seconds, "at": at},
        )


def _delays(connection: Connection) -> list[tuple[Any, ...]]:
    rows = connection.execute(text("SELECT * FROM lineup_messages ORDER BY position")).mappings()
    return [(row.get("delay_days"), row["delay_seconds"]) for row in rows]


def test_0013_turns_whole_days_of_stored_delays_into_calendar_days(empty_url: str) -> None:
    """Every delay reads back as the same text; downgrade gives the seconds back."""
    upgrade(empty_url, "0012")
    _run_sql(empty_url, _seed_lineup)
    upgrade(empty_url)
    assert _run_sql(empty_url, _delays) == [(d, s) for _, d, s, _ in STORED_DELAYS]
    delays = [Delay(days, seconds) for _, days, seconds, _ in STORED_DELAYS]
    assert [format_delay(d) for d in delays] == [t for _, _, _, t in STORED_DELAYS]
    assert [format_duration(seconds) for seconds, _, _, _ in STORED_DELAYS] == [
        t for _, _, _, t in STORED_DELAYS
    ]  # what the API showed before
    downgrade(empty_url, "0012")
    assert _run_sql(empty_url, _delays) == [(None, s) for s, _, _, _ in STORED_DELAYS]


def _seed_policy_at_version_3(connection: Connection) -> None:
    """A policy edited twice before versions were recorded; one of its steps deleted."""
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    later = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
    connection.execute(
        insert(table_of(Account)).values(id="acme", name="Acme", created_at=at, updated_at=at)
    )
    connection.execute(
        insert(table_of(Policy)).values(
            id="pol_before0015", account_id="acme", name="NPS", name_key="nps",
            status="paused", uuid_field="mobile", version=3,
            fatigue={"pending_token": {"enabled": True}},
            business_rules={"time_zone": "Europe/Berlin", "days": {"mon": []}},
            dnd_webhooks={"email": "https://dnd.example.com/c?token=s3cr3t", "sms": None},
            created_at=at, updated_at=later,
        )
    )  # fmt: skip
    for mid, position, days, seconds, deleted in [
        ("msg_1", 1, 0, 0, None),
        ("msg_gone", None, 0, 3_600, later),
        ("msg_2", 2, 1, 7_200, None),
    ]:
        connection.execute(
            text(
                "INSERT INTO lineup_messages (id, policy_id, position, channel, delay_days, "
                "delay_seconds, created_at, deleted_at) VALUES (:id, 'pol_before0015', "
                ":position, 'email', :days, :seconds, :at, :deleted)"
            ),
            {"id": mid, "position": position, "days": days, "seconds": seconds, "at": at,
             "deleted": deleted},
        )  # fmt: skip


def _policy_versions(connection: Connection) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(table_of(PolicyVersion)).order_by(text("policy_id, number"))
    ).mappings()
    return [dict(row) for row in rows]


def test_0015_keeps_each_stored_policy_as_one_migrated_version(empty_url: str) -> None:
    upgrade(empty_url, "0014")
    _run_sql(empty_url, _seed_policy_at_version_3)
    upgrade(empty_url)
    [version] = _run_sql(empty_url, _policy_versions)
    assert version["policy_id"] == "pol_before0015"
    assert version["number"] == 3  # its current number: the next edit is version 4
    assert version["change"] == "migrated" and version["key_id"] is None
    assert version["created_at"] == datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
    snapshot = version["snapshot"]
    assert (snapshot["name"], snapshot["status"], snapshot["deleted"]) == ("NPS", "paused", False)
    assert snapshot["fatigue"]["uuid_field"] == "mobile"
    assert snapshot["business_rules"]["time_zone"] == "Europe/Berlin"
    assert snapshot["dnd_webhooks"] == {"email": "https://dnd.example.com/c?token=***"}
    assert "s3cr3t" not in str(snapshot)
    assert snapshot["lineup"] == [
        {"id": "msg_1", "position": 1, "channel": "email", "delay": "PT0S"},
        {"id": "msg_2", "position": 2, "channel": "email", "delay": "P1DT2H"},
    ]
    downgrade(empty_url, "0014")
    assert "policy_versions" not in _inspect(empty_url)[0]


def test_decision_trace_table_and_its_lookup_index(empty_url: str) -> None:
    """0016: message_decisions with its (invite_id, at) index; downgrading drops it."""

    def indexes(connection: Connection) -> dict[str, list[str | None]]:
        found = inspect(connection).get_indexes("message_decisions")
        return {i["name"]: list(i["column_names"]) for i in found if i["name"]}

    async def go() -> dict[str, list[str | None]]:
        engine = build_engine(empty_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(indexes)
        finally:
            await engine.dispose()

    upgrade(empty_url)
    assert asyncio.run(go()) == {"ix_message_decisions_invite_at": ["invite_id", "at"]}
    downgrade(empty_url, "-1")
    assert "message_decisions" not in _inspect(empty_url)[0]
    upgrade(empty_url)
    assert "message_decisions" in _inspect(empty_url)[0]
