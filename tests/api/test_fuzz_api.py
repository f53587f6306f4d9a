"""Schemathesis over /openapi.json with an admin key, on SQLite and PostgreSQL: no 5xx.

A short run of scripts/fuzz_api.py (a few examples per operation and phase, about 30 s a
database) so CI keeps every operation honest; run the script itself for a longer search,
e.g. `--max-examples 200 --max-time 900`. Deselect locally with `-m "not fuzz"`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL, REQUIRE_PG, _pg_reachable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_api.py"


@pytest.mark.fuzz
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_schemathesis_finds_no_server_error(db: str) -> None:
    if db == "postgresql" and not _pg_reachable():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required but not reachable at {PG_URL}")
        pytest.skip("PostgreSQL not reachable")
    command = [sys.executable, str(SCRIPT), "--db", db, "--pg-url", PG_URL]
    command += ["--max-examples", "5", "--max-time", "25", "--workers", "2"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert run.stdout.strip(), run.stderr[-5000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["server_errors"] == 0, run.stderr[-20_000:]
    assert figures["requests"] > 200, figures  # every operation (65) was reached
    assert figures["by_status"].get("201", 0) > 0, figures  # and some requests got through
