"""`observe_many` records exactly what `observe` per value would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from dispatch_engine.observability.metrics import LATENCY_BUCKETS, observe_many


def _samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, round(sample.value, 6))
        for family in histogram.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    ]


def _fresh() -> Histogram:
    return Histogram(
        "latency_seconds", "test", buckets=LATENCY_BUCKETS, registry=CollectorRegistry()
    )


@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, *LATENCY_BUCKETS, 3600.5]),  # on and just past the bounds
            st.floats(min_value=0, max_value=10_000, allow_nan=False),
        ),
        max_size=50,
    )
)
def test_observe_many_matches_observe_per_value(amounts: list[float]) -> None:
    one_by_one, at_once = _fresh(), _fresh()
    for amount in amounts:
        one_by_one.observe(amount)
    observe_many(at_once, iter(amounts))
    assert _samples(at_once) == _samples(one_by_one)
