#!/usr/bin/env bash
# Installs (first time) and starts dispatch-engine on the embedded default:
# SQLite file in ./.dispatch-engine/, local queue, API + worker in one process, 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/dispatch-engine serve "$@"
