"""`dispatch-engine worker` under tracemalloc, for finding what makes its RSS grow.

Runs the real worker command in this process with tracemalloc on, and from a side thread
writes, every `--every` seconds after `--warmup` seconds, the allocation sites that grew
most since the warm-up snapshot to `--out`. Used by `bench.soak --trace-worker FILE`;
tracemalloc slows allocation, so figures from a traced run are not throughput figures.

    .venv/bin/python -m bench.memtrace_worker --out /tmp/worker-growth.txt
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def _report(out: Path, warmup: float, every: float) -> None:
    time.sleep(warmup)
    baseline = tracemalloc.take_snapshot()
    started = time.monotonic()
    while True:
        time.sleep(every)
        snapshot = tracemalloc.take_snapshot()
        growth = snapshot.compare_to(baseline, "traceback")
        current, _ = tracemalloc.get_traced_memory()
        lines = [
            f"after {(time.monotonic() - started) / 60:.1f} min past warm-up: "
            f"traced {current / 2**20:.1f} MB"
        ]
        for stat in growth[:25]:
            lines.append(f"{stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks)")
            lines.extend(f"    {frame}" for frame in stat.traceback.format()[-8:])
        out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--warmup", type=float, default=180.0, help="seconds")
    parser.add_argument("--every", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    tracemalloc.start(8)
    threading.Thread(target=_report, args=(args.out, args.warmup, args.every), daemon=True).start()
    from dispatch_engine.__main__ import main as cli

    sys.argv = ["dispatch-engine", "worker"]
    cli()


if __name__ == "__main__":
    main()
