"""The CLI says which store it uses (issue 20, part 4): a `store:` line on stderr for every
command, no store made by accident (a missing SQLite file is an error except for `migrate`
and `serve`), a busy port named by its setting, `scripts/run.sh` on an absolute data dir,
and README's configuration table covering every setting."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dispatch_engine.__main__ import app
from dispatch_engine.cli.checks import describe_store, missing_sqlite_file
from dispatch_engine.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "dispatch-engine")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DISPATCH_ variable or .env file of the caller leaks in; quiet logs."""
    for name in list(os.environ):
        if name.startswith("DISPATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DISPATCH_LOG_LEVEL", "WARNING")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def store_line(path: Path) -> str:
    return f"store: sqlite:///{path}"


# --- the store line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://alice:s3cret@db.internal:6543/dispatch",
            "postgresql://db.internal:6543/dispatch",
        ),
        (
            "postgresql+asyncpg://alice@db.internal/dispatch",
            "postgresql://db.internal:5432/dispatch",
        ),
        (
            "postgresql+asyncpg:///dispatch?host=/run/postgresql",
            "postgresql://localhost:5432/dispatch (socket in /run/postgresql)",
        ),
        ("sqlite+aiosqlite:///:memory:", "sqlite:// (in memory)"),
        ("not a url", "(DISPATCH_DATABASE_URL is not a database URL)"),
    ],
)
def test_describe_store_never_shows_a_user_or_password(url: str, shown: str) -> None:
    assert describe_store(url) == shown


def test_a_relative_sqlite_path_is_shown_absolute(tmp_path: Path) -> None:
    assert describe_store("sqlite+aiosqlite:///rel/x.db") == store_line(tmp_path / "rel/x.db")[7:]
    assert missing_sqlite_file("sqlite+aiosqlite:///rel/x.db") == tmp_path / "rel" / "x.db"
    assert missing_sqlite_file("postgresql+asyncpg://h/db") is None


def test_every_command_says_which_store_it_uses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, busy_port: int
) -> None:
    database = tmp_path / ".dispatch-engine" / "dispatch-engine.db"
    migrated = invoke("migrate")
    assert migrated.exit_code == 0, migrated.output
    assert database.exists()
    commands: list[tuple[list[str], dict[str, str]]] = [
        (["migrate"], {}),
        (["apikey", "create", "--role", "admin"], {}),
        (["queue", "tail", "--account", "acme", "--no-follow"], {}),  # no such account: 1
        (["incidents", "list"], {}),
        (["keys", "reencrypt", "--dry-run"], {}),
        (["serve", "--port", str(busy_port)], {}),  # stops at the port, after the line
        (["api", "--port", str(busy_port)], {}),
        (["worker"], {"DISPATCH_METRICS_PORT": str(busy_port)}),
    ]
    for args, env in commands:
        with monkeypatch.context() as patched:
            for name, value in env.items():
                patched.setenv(name, value)
            result = invoke(*args)
        assert result.stderr.splitlines()[0] == store_line(database), (args, result.output)


def test_the_store_line_of_postgresql_has_no_secrets(
    monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    monkeypatch.setenv("DISPATCH_DATABASE_URL", "postgresql+asyncpg://alice:s3cret@db.x:6543/d")
    result = invoke("api", "--port", str(busy_port))  # refused at the port: no connection
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "store: postgresql://db.x:6543/d"
    assert "alice" not in result.output and "s3cret" not in result.output


# --- no store made by accident ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["apikey", "create", "--role", "admin"],
        ["queue", "tail", "--account", "acme", "--no-follow"],
        ["incidents", "list"],
        ["incidents", "show", "inc_x"],
        ["incidents", "impacted", "inc_x", "--csv"],
        ["keys", "reencrypt"],
        ["api"],
        ["worker"],
    ],
)
def test_commands_that_do_not_create_a_store_refuse_a_missing_one(
    tmp_path: Path, args: list[str]
) -> None:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    expected = tmp_path / ".dispatch-engine" / "dispatch-engine.db"
    assert f"error: no store at {expected} " in result.stderr
    assert "DISPATCH_DATA_DIR=.dispatch-engine, relative to the current directory" in result.stderr
    assert "DISPATCH_DATABASE_URL" in result.stderr and "dispatch-engine migrate" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / ".dispatch-engine").exists()  # nor its dev key file


def test_a_missing_database_url_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISPATCH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    result = invoke("queue", "tail", "--account", "acme")
    assert result.exit_code == 1
    assert f"no store at {tmp_path / 'x.db'} (the SQLite file DISPATCH_DATABASE_URL names)" in (
        result.stderr
    )
    assert not (tmp_path / "x.db").exists()


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_apikey_create_from_another_directory_is_refused_instead_of_a_new_store(
    tmp_path: Path,
) -> None:
    """The bug: run elsewhere, it made a new store and printed a key the server rejects."""
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    assert _run(["migrate"], served).returncode == 0
    result = _run(["apikey", "create", "--role", "admin"], elsewhere)
    assert (result.returncode, result.stdout) == (1, "")
    assert f"no store at {elsewhere / '.dispatch-engine' / 'dispatch-engine.db'}" in result.stderr
    assert list(elsewhere.iterdir()) == []
    # With the data dir `serve` printed, from anywhere: the server's store.
    result = _run(
        ["apikey", "create", "--role", "admin"],
        elsewhere,
        DISPATCH_DATA_DIR=str(served / ".dispatch-engine"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("de_")
    assert result.stderr.splitlines()[0] == store_line(
        served / ".dispatch-engine" / "dispatch-engine.db"
    )


# --- ports and the banner ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "setting"),
    [
        (["serve"], "DISPATCH_PORT", "DISPATCH_PORT"),
        (["api"], "DISPATCH_PORT", "DISPATCH_PORT"),
        (["worker"], "DISPATCH_METRICS_PORT", "DISPATCH_METRICS_PORT"),
    ],
)
def test_a_busy_port_names_the_setting_without_a_traceback(
    tmp_path: Path, busy_port: int, args: list[str], env: str, setting: str
) -> None:
    assert _run(["migrate"], tmp_path).returncode == 0
    result = _run(args, tmp_path, **{env: str(busy_port)})
    assert result.returncode == 1, result.stderr
    assert f"error: port {busy_port} on 127.0.0.1 is already in use" in result.stderr
    assert f"choose another port with {setting}" in result.stderr
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr


def test_serve_prints_whole_urls_and_how_to_reach_its_store(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [CLI, "serve"],
            cwd=tmp_path,
            env={**os.environ, "DISPATCH_PORT": str(port), "COLUMNS": "40"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while "first admin key" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=15)
    lines = log.read_text().splitlines()
    data_dir = tmp_path / ".dispatch-engine"
    assert lines[0] == store_line(data_dir / "dispatch-engine.db")
    base = f"http://127.0.0.1:{port}"
    assert f"dispatch-engine on {base}  (API docs: {base}/docs)" in lines
    assert (
        f"first admin key: DISPATCH_DATA_DIR={data_dir} dispatch-engine apikey create --role admin"
        in lines
    )


def test_run_sh_pins_an_absolute_data_dir(tmp_path: Path, busy_port: int) -> None:
    """`scripts/run.sh` from another directory: the repository's data dir, absolute; a
    relative DISPATCH_DATA_DIR is taken from where it was started. (A busy port stops
    `serve` right after it said which store it would use.)"""
    script = str(ROOT / "scripts" / "run.sh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["DISPATCH_PORT"] = str(busy_port)
    for data_dir, expected in ((None, ROOT / ".dispatch-engine"), ("rel", tmp_path / "rel")):
        run_env = env if data_dir is None else {**env, "DISPATCH_DATA_DIR": data_dir}
        result = subprocess.run(
            ["bash", script], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 1, result.stderr
        assert store_line(expected / "dispatch-engine.db") in result.stderr.splitlines()
    assert not (tmp_path / "rel").exists()


# --- README --------------------------------------------------------------------------------------


def _configuration_table() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_readme_configuration_table_lists_every_setting() -> None:
    table = _configuration_table()
    listed = set(re.findall(r"`(DISPATCH_[A-Z0-9_]+)`", table))
    settings = {f"DISPATCH_{name.upper()}" for name in Settings.model_fields}
    assert sorted(settings - listed) == [], "settings missing from README's Configuration table"
    assert sorted(listed - settings) == [], "README lists settings that do not exist"


def test_readme_lists_the_service_endpoints() -> None:
    readme = (ROOT / "README.md").read_text()
    for endpoint in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert f"`GET {endpoint}`" in readme or f"`{endpoint}`" in readme, endpoint
