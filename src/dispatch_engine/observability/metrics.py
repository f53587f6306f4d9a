"""Prometheus metrics. Labels are bounded sets only: never addresses, tokens or ids.

With several API worker processes set PROMETHEUS_MULTIPROC_DIR (an empty directory shared
by the processes); `/metrics` then aggregates every process's samples.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe(a)` for every amount, with one increment per bucket touched.

    The relay observes every message of a batch; `observe` per message cost a few
    microseconds each (a Python loop over the buckets). Same samples either way (a test
    compares the two on fresh histograms, which also guards the attributes used here).
    """
    bounds = histogram._upper_bounds  # private in prometheus_client
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        total += amount
        counts[bisect_left(bounds, amount)] += 1  # the first bound >= amount, as observe
    if not any(counts):
        return
    histogram._sum.inc(total)
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)


CONTACTS = Counter("dispatch_contacts_total", "Contact rows received, by outcome.", ["outcome"])
STUCK_SESSIONS_ENDED = Counter(
    "dispatch_stuck_sessions_ended_total",
    "Database sessions of a frozen or cut-off process ended by another worker, so the rows "
    "it had claimed come back (PostgreSQL).",
)
TRANSACTION_RETRIES = Counter(
    "dispatch_transaction_retries_total",
    "Transactions run again after the database aborted them (deadlock, serialization) or a "
    "racing writer took a unique key first, by where and why.",
    ["where", "kind"],
)
MESSAGES = Counter(
    "dispatch_messages_total",
    "Messages decided by the rule pipeline, by outcome and reason.",
    ["outcome", "reason"],
)
CLAIM_LAG = Histogram(
    "dispatch_claim_lag_seconds",
    "How long a due message waited before a worker decided it.",
    buckets=LATENCY_BUCKETS,
)
PIPELINE_LATENCY = Histogram(
    "dispatch_pipeline_latency_seconds",
    "From the moment a message came due (or its window opened) to the queue's ack.",
    buckets=LATENCY_BUCKETS,
)
DND_REQUESTS = Counter(
    "dispatch_dnd_requests_total",
    "DND webhook checks, by target host and answer.",
    ["host", "answer"],
)
DND_LATENCY = Histogram(
    "dispatch_dnd_latency_seconds", "DND webhook check latency, by target host.", ["host"]
)
QUEUE_PUSHES = Counter(
    "dispatch_queue_push_total",
    "Messages pushed to queues, by queue kind and outcome.",
    ["kind", "outcome"],
)
QUEUE_PUSH_LATENCY = Histogram(
    "dispatch_queue_push_latency_seconds", "Latency of one queue push call, by kind.", ["kind"]
)
OUTBOX_DEPTH = Gauge(
    "dispatch_outbox_depth",
    "Outbox rows not yet acknowledged by a queue.",
    multiprocess_mode="max",
)
OUTBOX_OLDEST_AGE = Gauge(
    "dispatch_outbox_oldest_age_seconds",
    "Age of the oldest unacknowledged outbox row.",
    multiprocess_mode="max",
)
QUEUE_INTEGRATIONS_REFUSING = Gauge(
    "dispatch_queue_integrations_refusing",
    "Queue integrations whose queue refused the last push as a whole (push_error set).",
    multiprocess_mode="max",
)


def metrics_payload() -> tuple[bytes, str]:
    """The exposition text: all processes' samples in multiprocess mode, else this one's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
