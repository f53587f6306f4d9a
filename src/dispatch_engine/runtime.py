"""Process-level tuning for long-running service processes (API, worker, serve).

The hot paths allocate many short-lived objects per batch (rows, dicts, queue bodies) next
to a large, long-lived heap (modules, metadata, caches). With CPython's default thresholds
the young generation is collected every 700 allocations and the full heap is walked far too
often: measured here it cost the relay about a fifth of its throughput. So, once per
process, after start-up: freeze what start-up created (never scanned again) and collect the
young generation less often. Reference counting still frees almost everything at once; only
reference cycles wait longer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from functools import cache

__all__ = ["GC_THRESHOLDS", "MEMORY_RELEASE_SECONDS", "release_memory", "tune_gc"]

GC_THRESHOLDS = (50_000, 20, 100)
MEMORY_RELEASE_SECONDS = 60
_tuned = False


def tune_gc() -> bool:
    """Apply the thresholds and freeze the start-up heap; True the first time only."""
    global _tuned
    if _tuned:
        return False
    _tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return True


@cache
def _trim_function() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] | None = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return trim


def release_memory() -> bool:
    """Collect every generation, then hand the C heap's free pages back to the system.

    Why, in a long-running worker: with the thresholds above the oldest generation is
    collected rarely, so reference cycles that outlived a few batches wait there; and glibc
    keeps pages freed by the batches' large buffers (row sets, queue bodies) in its arenas.
    Both read as a slow RSS climb over hours. Called every `MEMORY_RELEASE_SECONDS`; costs
    a few milliseconds because the start-up heap is frozen. True when the heap was trimmed.
    """
    gc.collect()
    trim = _trim_function()
    if trim is None:
        return False
    trim(0)
    return True
