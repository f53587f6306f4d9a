"""`dispatch-engine incidents list|show|impacted --csv` over a migrated SQLite file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from dispatch_engine.__main__ import app
from dispatch_engine.api.app import create_app
from dispatch_engine.context import build_context
from dispatch_engine.db.migrate import upgrade
from dispatch_engine.services.api_keys import create_api_key
from tests.conftest import ENCRYPTION_KEYS, HMAC_KEYS, make_settings


def _seed(url: str, data_dir: Path) -> str:
    async def go() -> str:
        context = build_context(make_settings(url, data_dir))
        try:
            async with context.sessions() as session, session.begin():
                _, key = await create_api_key(
                    session, role="operator", account_id=None, name=None, now=context.clock.now()
                )
            transport = httpx.ASGITransport(app=create_app(context.settings, context=context))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                created = await http.post(
                    "/v1/incidents",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"title": "=Relay down", "service": "relay", "severity": "P2"},
                )
                assert created.status_code == 201, created.text
                return str(created.json()["id"])
        finally:
            await context.aclose()

    return asyncio.run(go())


def _use_store(monkeypatch: pytest.MonkeyPatch, url: str, data_dir: Path) -> None:
    """The environment a CLI command reads its settings from."""
    for name, value in {
        "DISPATCH_DATABASE_URL": url,
        "DISPATCH_DATA_DIR": str(data_dir),
        "DISPATCH_ENCRYPTION_KEYS": ENCRYPTION_KEYS,
        "DISPATCH_HMAC_KEYS": HMAC_KEYS,
        "DISPATCH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)


def test_incidents_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    incident_id = _seed(url, tmp_path)
    _use_store(monkeypatch, url, tmp_path)
    runner = CliRunner()

    listed = runner.invoke(app, ["incidents", "list", "--open"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split("\t")[:3] == [incident_id, "P2", "reported"]

    shown = runner.invoke(app, ["incidents", "show", incident_id])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["title"] == "=Relay down"

    impacted = runner.invoke(app, ["incidents", "impacted", incident_id, "--csv"])
    assert impacted.exit_code == 0, impacted.output
    rows = list(csv.reader(io.StringIO(impacted.stdout)))
    assert rows[0][:3] == ["account", "account_name", "sending"] and rows[1:] == []

    missing = runner.invoke(app, ["incidents", "show", "inc_missing"])
    assert missing.exit_code == 2


def test_incidents_cli_on_a_fresh_store_and_with_bad_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"  # never migrated
    _use_store(monkeypatch, url, tmp_path)
    runner = CliRunner()
    # Issue 20: a read-side command no longer creates a store that does not exist…
    missing = runner.invoke(app, ["incidents", "list"])
    assert (missing.exit_code, missing.stdout) == (1, ""), missing.output
    assert f"no store at {tmp_path / 'fresh.db'}" in missing.stderr
    assert not (tmp_path / "fresh.db").exists()
    # …but brings an existing one (here empty) to the current schema.
    (tmp_path / "fresh.db").touch()
    listed = runner.invoke(app, ["incidents", "list"])
    assert (listed.exit_code, listed.stdout) == (0, ""), listed.output  # empty, not a crash
    for args in (["list", "--state", "bogus"], ["impacted", "inc_x", "--channel", "fax"]):
        refused = runner.invoke(app, ["incidents", *args])
        assert refused.exit_code == 2, refused.output
        assert "must be one of" in refused.output
