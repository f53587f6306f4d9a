#!/usr/bin/env bash
# A tiny run of every benchmark, so CI proves they still work (figures are not checked).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m bench.ingest --rows 2000
$PY -m bench.dispatch --rows 2000
$PY -m bench.dispatch --rows 1000 --dnd-ms 5 --workers 2
if [ -f bench/relay.py ]; then
  $PY -m bench.relay --rows 2000 --repeat 1
fi
$PY -m bench.end_to_end --rows 2000
$PY -m bench.soak --minutes 0.2 --rate 20
