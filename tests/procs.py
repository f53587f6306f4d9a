"""Helpers for tests that run real worker processes against the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ENCRYPTION_KEYS, HMAC_KEYS

BIN = Path(sys.executable).parent
ALL_WEEK = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_worker(
    url: str, log: Path, *, grace: float = 5.0, **settings: str
) -> subprocess.Popen[bytes]:
    """`dispatch-engine worker` on the test database, with the tests' key rings; keyword
    arguments become DISPATCH_<NAME> settings."""
    return _start(["worker", "--grace", str(grace)], url, log, settings)


def start_api(url: str, log: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    """`dispatch-engine api` on 127.0.0.1:`port` (settings as for `start_worker`)."""
    return _start(["api", "--host", "127.0.0.1", "--port", str(port)], url, log, settings)


def _start(
    command: list[str], url: str, log: Path, settings: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DISPATCH_DATABASE_URL": url,
        "DISPATCH_ENCRYPTION_KEYS": ENCRYPTION_KEYS,
        "DISPATCH_HMAC_KEYS": HMAC_KEYS,
        "DISPATCH_DATA_DIR": str(log.parent),
        "AWS_EC2_METADATA_DISABLED": "true",
        # The queue servers (moto, the sink) listen on loopback: allow-listed, as in the
        # in-process tests' settings (the senders refuse loopback otherwise).
        "DISPATCH_WEBHOOK_ALLOW_HTTP": "true",
        "DISPATCH_WEBHOOK_ALLOWLIST": "127.0.0.1/32,localhost",
        **{f"DISPATCH_{name.upper()}": value for name, value in settings.items()},
    }
    return subprocess.Popen(
        [str(BIN / "dispatch-engine"), *command],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def send_now_dispatch(
    client: httpx.AsyncClient, headers: dict[str, str], **policy: Any
) -> dict[str, Any]:
    """A one-message policy open all week (so real time never defers it) and a dispatch."""
    body = {
        "name": "Now",
        "lineup": [{"channel": "email", "delay": "PT0S"}],
        "business_rules": {"time_zone": "UTC", "days": ALL_WEEK},
        **policy,
    }
    created = await client.post("/v1/accounts/acme/policies", headers=headers, json=body)
    assert created.status_code == 201, created.text
    saved = created.json()
    dispatch = await client.post(
        "/v1/accounts/acme/dispatches",
        headers=headers,
        json={
            "questionnaire_id": "q",
            "policy_id": saved["id"],
            "token_validity": "P7D",
            "message_templates": {saved["lineup"][0]["id"]: "tpl"},
        },
    )
    assert dispatch.status_code == 201, dispatch.text
    result: dict[str, Any] = dispatch.json()
    return result
