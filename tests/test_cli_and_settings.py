"""§7: settings from the environment, dev secrets, and the `dispatch-engine` command line."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from dispatch_engine.api.app import create_app
from dispatch_engine.context import DEV_SECRETS_FILE, build_context, key_ring_specs
from dispatch_engine.settings import Settings
from tests.conftest import ENCRYPTION_KEYS, HMAC_KEYS, bearer

BIN = Path(sys.executable).parent
CLI = str(BIN / "dispatch-engine")
KEY_PATTERN = re.compile(r"^de_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DISPATCH_ variable or .env file of the caller leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("DISPATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --- settings ------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = _settings()
    assert settings.env == "dev"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.data_dir == Path(".dispatch-engine")
    assert settings.effective_database_url == (
        f"sqlite+aiosqlite:///{tmp_path / '.dispatch-engine' / 'dispatch-engine.db'}"
    )


def test_prod_refuses_missing_secrets() -> None:
    with pytest.raises(ValidationError) as raised:
        _settings(env="prod")
    message = str(raised.value)
    assert "DISPATCH_ENCRYPTION_KEYS" in message
    assert "DISPATCH_HMAC_KEYS" in message
    assert "DISPATCH_DATABASE_URL" in message

    with pytest.raises(ValidationError, match="DISPATCH_ENCRYPTION_KEYS"):
        _settings(env="prod", hmac_keys=HMAC_KEYS, database_url="postgresql+asyncpg://h/db")


def test_prod_refuses_plain_http_webhooks() -> None:
    complete = {
        "env": "prod",
        "encryption_keys": ENCRYPTION_KEYS,
        "hmac_keys": HMAC_KEYS,
        "database_url": "postgresql+asyncpg://db.internal/dispatch",
    }
    assert _settings(**complete).env == "prod"
    with pytest.raises(ValidationError, match="DISPATCH_WEBHOOK_ALLOW_HTTP"):
        _settings(**complete, webhook_allow_http=True)


def test_prod_error_does_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_ENV", "prod")
    monkeypatch.setenv("DISPATCH_ENCRYPTION_KEYS", ENCRYPTION_KEYS)
    monkeypatch.setenv("DISPATCH_HMAC_KEYS", HMAC_KEYS)
    monkeypatch.setenv("DISPATCH_WEBHOOK_ALLOW_HTTP", "true")
    with pytest.raises(ValidationError) as raised:
        _settings(database_url="postgresql+asyncpg://db.internal/dispatch")
    assert ENCRYPTION_KEYS.split(":")[1] not in str(raised.value)
    assert HMAC_KEYS.split(":")[1] not in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DISPATCH_ENCRYPTION_KEYS", "garbage", "must look like"),
        ("DISPATCH_HMAC_KEYS", "k1:c2VjcmV0c2VjcmV0", "must decode to 32 bytes"),
    ],
)
def test_a_malformed_key_ring_is_a_configuration_error_without_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("DISPATCH_ENCRYPTION_KEYS", ENCRYPTION_KEYS)
    monkeypatch.setenv("DISPATCH_HMAC_KEYS", HMAC_KEYS)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        _settings()
    assert message in str(raised.value)
    assert value not in str(raised.value) and "c2VjcmV0" not in str(raised.value)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISPATCH_HOST", "0.0.0.0")
    monkeypatch.setenv("DISPATCH_PORT", "9123")
    monkeypatch.setenv("DISPATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISPATCH_WEBHOOK_ALLOWLIST", "10.0.0.0/8, dnd.internal ,")
    monkeypatch.setenv("DISPATCH_RESEND_THRESHOLD_MINUTES", "90")
    monkeypatch.setenv("DISPATCH_ENCRYPTION_KEYS", ENCRYPTION_KEYS)
    settings = _settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 9123
    assert settings.data_dir == tmp_path / "data"
    assert settings.webhook_allowlist == ["10.0.0.0/8", "dnd.internal"]
    assert settings.resend_threshold_minutes == 90
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.get_secret_value() == ENCRYPTION_KEYS
    assert ENCRYPTION_KEYS not in repr(settings)
    assert settings.effective_database_url.endswith(f"{tmp_path}/data/dispatch-engine.db")

    monkeypatch.setenv("DISPATCH_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert _settings().effective_database_url == "postgresql+asyncpg://u@h/db"

    monkeypatch.setenv("DISPATCH_PORT", "70000")
    with pytest.raises(ValidationError):
        _settings()


def test_dot_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISPATCH_PORT=8111\nDISPATCH_HOST=10.1.2.3\n")
    settings = Settings()
    assert (settings.port, settings.host) == (8111, "10.1.2.3")
    monkeypatch.setenv("DISPATCH_PORT", "8222")  # the environment wins over the file
    assert Settings().port == 8222


async def test_dev_secrets_file_is_created_once_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    settings = _settings(data_dir=data_dir, database_url=url)
    secrets_file = data_dir / DEV_SECRETS_FILE
    assert not secrets_file.exists()

    first = build_context(settings)
    try:
        assert secrets_file.exists()
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        content = secrets_file.read_bytes()
        sealed = first.cipher.encrypt("hello", aad=b"t")
        digest = first.hasher.digest("someone@example.com")
    finally:
        await first.aclose()

    second = build_context(_settings(data_dir=data_dir, database_url=url))
    try:
        assert secrets_file.read_bytes() == content
        assert second.cipher.decrypt(sealed, aad=b"t") == "hello"
        assert second.hasher.digest("someone@example.com") == digest
    finally:
        await second.aclose()
    assert key_ring_specs(settings) == key_ring_specs(_settings(data_dir=data_dir))
    assert [p.name for p in data_dir.iterdir()] == [DEV_SECRETS_FILE]


def test_configured_keys_do_not_touch_the_data_dir(tmp_path: Path) -> None:
    settings = _settings(
        data_dir=tmp_path / "data", encryption_keys=ENCRYPTION_KEYS, hmac_keys=HMAC_KEYS
    )
    assert key_ring_specs(settings) == (ENCRYPTION_KEYS, HMAC_KEYS)
    assert not (tmp_path / "data").exists()


# --- the command line ------------------------------------------------------------------------


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["DISPATCH_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_module_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dispatch_engine", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "apikey"):
        assert command in result.stdout


async def test_apikey_create_prints_only_the_key(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    # `apikey create` needs an existing store (issue 20; it used to create one itself).
    assert _run(["migrate"], env, tmp_path).returncode == 0
    result = _run(["apikey", "create", "--role", "admin"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert result.stdout == lines[0] + "\n"
    key = lines[0]
    assert KEY_PATTERN.match(key), key

    backend = _run(["apikey", "create", "--role", "backend", "--account", "acme"], env, tmp_path)
    assert backend.returncode == 0, backend.stderr
    backend_key = backend.stdout.strip()
    assert KEY_PATTERN.match(backend_key)

    # An app built from the same settings knows both keys.
    app = create_app(_settings(data_dir=tmp_path / "data"))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/v1/api-keys", headers=bearer(key))
            assert response.status_code == 200, response.text
            assert {(k["role"], k["account"]) for k in response.json()} == {
                ("admin", None),
                ("backend", "acme"),
            }
            response = await http.get("/v1/api-keys", headers=bearer(backend_key))
            assert response.status_code == 403
            audit = await http.get("/v1/admin/audit", headers=bearer(key))
            assert [(a["action"], a["role"]) for a in audit.json()["items"]] == [
                ("api_key.create", "cli"),
                ("api_key.create", "cli"),
            ]
            assert key not in audit.text
    finally:
        await app.state.context.aclose()


@pytest.mark.parametrize(
    "args",
    [
        ["apikey", "create", "--role", "nope"],
        ["apikey", "create", "--role", "operator", "--account", "acme"],
        ["apikey", "create"],
    ],
)
def test_apikey_create_refusals(tmp_path: Path, args: list[str]) -> None:
    assert _run(["migrate"], _env(tmp_path / "data"), tmp_path).returncode == 0
    result = _run(args, _env(tmp_path / "data"), tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip()


def test_apikey_create_with_bad_configuration(tmp_path: Path) -> None:
    result = _run(
        ["apikey", "create", "--role", "admin"],
        _env(tmp_path / "data", DISPATCH_ENV="prod"),
        tmp_path,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "DISPATCH_ENCRYPTION_KEYS" in result.stderr


def test_migrate(tmp_path: Path) -> None:
    result = _run(["migrate"], _env(tmp_path / "data"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (tmp_path / "data" / "dispatch-engine.db").exists()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = _env(tmp_path / "data", DISPATCH_PORT=str(port))
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [CLI, "serve"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up within 20 s"
            time.sleep(0.1)
        yield base, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def test_serve(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = served
    with httpx.Client(base_url=base, timeout=5) as http:
        response = http.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

        response = http.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "status": "ready",
            "checks": {"database": "ok", "migrations": "ok"},
        }

        response = http.get("/docs")
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]

        response = http.get("/openapi.json")
        assert response.status_code == 200
        assert "/v1/accounts" in response.json()["paths"]

        response = http.get("/v1/api-keys")
        assert response.status_code == 401

        # `apikey create` with the same environment talks to the same store.
        result = _run(["apikey", "create", "--role", "admin"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        response = http.get("/v1/api-keys", headers=bearer(key))
        assert response.status_code == 200, response.text
        assert len(response.json()) == 1

        response = http.post("/v1/accounts", headers=bearer(key), json={"id": "acme", "name": "A"})
        assert response.status_code == 201, response.text

        # `queue tail` prints the local queue's messages as JSON lines; an account that does
        # not exist, or does not use the local queue, is an error, not an empty queue.
        result = _run(["queue", "tail", "--account", "nope", "--no-follow"], env, tmp_path)
        assert result.returncode == 1
        assert "account 'nope' not found" in result.stderr and result.stdout == ""
        result = _run(["queue", "tail", "--account", "acme", "--no-follow"], env, tmp_path)
        assert result.returncode == 1
        assert "no queue integration" in result.stderr
        integration = "/v1/accounts/acme/queue-integration"
        response = http.put(integration, headers=bearer(key), json={"kind": "local"})
        assert response.status_code == 200, response.text
        probe = http.post(f"{integration}/verify", headers=bearer(key)).json()
        assert probe["ok"] is True, probe
        result = _run(["queue", "tail", "--account", "acme", "--no-follow"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(m["type"], m["message_id"]) for m in lines] == [("probe", probe["message_id"])]
