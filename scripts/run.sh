#!/usr/bin/env bash
# Installs (first time) and starts dispatch-engine on the embedded default:
# SQLite file in <repo>/.dispatch-engine/, local queue, API + worker in one process, 127.0.0.1:8000.
#
# The data dir is made absolute (DISPATCH_DATA_DIR, default: .dispatch-engine in the
# repository; a relative one is taken from the directory this script was started in), so
# the store does not depend on where later commands run: `serve` prints the exact
# `DISPATCH_DATA_DIR=… dispatch-engine apikey create --role admin` that reaches it, and
# every command prints the store it uses (`store: sqlite:////…/dispatch-engine.db`).
set -euo pipefail
caller="$PWD"
cd "$(dirname "$0")/.."
data_dir="${DISPATCH_DATA_DIR:-$PWD/.dispatch-engine}"
case "$data_dir" in
  /*) ;;
  *) data_dir="$caller/$data_dir" ;;
esac
export DISPATCH_DATA_DIR="$data_dir"
scripts/bootstrap.sh
exec .venv/bin/dispatch-engine serve "$@"
