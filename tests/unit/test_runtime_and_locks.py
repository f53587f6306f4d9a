"""Process tuning and the advisory-lock ids that serialise fatigue rule 2 per person."""

from __future__ import annotations

import platform
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from dispatch_engine.runtime import GC_THRESHOLDS
from dispatch_engine.store.lookups import person_lock_id


def test_release_memory_collects_old_cycles_and_trims_the_c_heap() -> None:
    # A child process, tuned as the worker is: a cycle that reached the oldest generation
    # would wait there for a full collection that the thresholds make rare.
    code = (
        "import gc, weakref; from dispatch_engine.runtime import tune_gc, release_memory\n"
        "tune_gc()\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a; alive = weakref.ref(a)\n"
        "gc.collect(1); gc.collect(1); del a, b\n"
        "before = alive() is not None\n"
        "trimmed = release_memory()\n"
        "print(before, alive() is None, trimmed)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    glibc = platform.libc_ver()[0] == "glibc"
    assert out.stdout.strip() == f"True True {glibc}"


def test_tune_gc_applies_once_per_process() -> None:
    # A child process: tuning this one would change the garbage collection of the test run.
    code = (
        "import gc; from dispatch_engine.runtime import tune_gc; "
        "print(tune_gc(), tune_gc(), gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"True False {GC_THRESHOLDS} True"


@given(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), st.sampled_from(["k1", "k2"])
)
def test_person_lock_ids_fit_a_postgresql_bigint_and_are_stable(digest: str, key: str) -> None:
    lock = person_lock_id(f"{key}:{digest}")
    assert -(2**63) <= lock < 2**63
    assert lock == person_lock_id(f"{key}:{digest}")


def test_different_people_get_different_lock_ids() -> None:
    a = person_lock_id("k1:" + "0" * 63 + "1")
    b = person_lock_id("k1:" + "f" * 64)
    assert a != b
