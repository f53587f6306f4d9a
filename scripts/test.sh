#!/usr/bin/env bash
# Installs (first time) and runs the whole test suite. PostgreSQL tests run when
# 127.0.0.1:5432 is reachable (DISPATCH_TEST_REQUIRE_PG=1 makes them mandatory); the run
# says which in its header and on its last line ("PostgreSQL: used (127.0.0.1:5432)" or
# "PostgreSQL: NOT reachable (…) - PostgreSQL tests skipped"; tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
