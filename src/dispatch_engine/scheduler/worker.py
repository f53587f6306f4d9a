"""The worker: APScheduler drives the claim loop and the outbox relay (R-SCH-1).

It runs in the `worker` process, or inside `serve` (the embedded default) — never in
`api` processes, so jobs do not run once per web worker. Jobs pass no objects between
runs and are safe to overlap across processes (claims, leases and fencing).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dispatch_engine.clients.dnd_webhook import DndClient
from dispatch_engine.clients.guarded_http import GuardedHttpClient
from dispatch_engine.context import AppContext
from dispatch_engine.db.stuck_sessions import end_stuck_sessions
from dispatch_engine.delivery.engine import DeliveryEngine
from dispatch_engine.delivery.facts import DndSettings
from dispatch_engine.delivery.relay import OutboxRelay
from dispatch_engine.incidents import job as incident_job
from dispatch_engine.ingest import batches
from dispatch_engine.queues.factory import SenderCache
from dispatch_engine.runtime import MEMORY_RELEASE_SECONDS, release_memory, tune_gc
from dispatch_engine.scheduler.maintenance import (
    erase_finished_contacts,
    expire_tokens,
    mark_delayed,
    prune_decisions,
)

log = structlog.get_logger(__name__)
MAX_ROUNDS_PER_TICK = 200


class Worker:
    def __init__(self, context: AppContext) -> None:
        settings = context.settings
        self.context = context
        self.http = GuardedHttpClient(
            context.url_policy,
            connect_timeout=settings.webhook_connect_timeout,
            read_timeout=settings.webhook_read_timeout,
            max_response_bytes=64 * 1024,
            max_concurrency_per_host=settings.dnd_concurrency,
        )
        self.engine = DeliveryEngine(
            context,
            DndClient(self.http, max_concurrency=settings.dnd_concurrency),
            dnd=DndSettings(
                max_failures=settings.dnd_max_failures,
                retry_after=timedelta(seconds=settings.dnd_retry_seconds),
            ),
        )
        self.senders = SenderCache(context)
        self.relay = OutboxRelay(context, self.senders)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        # "skipped: maximum number of running instances" is the intended back-pressure.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self._stopping = False
        self._running: set[asyncio.Task[object]] = set()

    async def deliver(self) -> None:
        """One tick: rounds of claimed batches until nothing is due (or shutdown)."""
        await self.engine.run_until_idle(MAX_ROUNDS_PER_TICK, should_stop=lambda: self._stopping)

    async def relay_outbox(self) -> None:
        await self.relay.run_until_idle(MAX_ROUNDS_PER_TICK, lambda: self._stopping)
        await self.relay.observe_depth()

    async def maintain(self) -> None:
        """Expire tokens, end uploads whose request died, then erase contact data that can no
        longer be needed."""
        now = self.context.clock.now()
        delayed_after = timedelta(seconds=self.context.settings.delayed_after_seconds)
        async with self.context.sessions() as session, session.begin():
            await expire_tokens(session, now, self.context.settings.worker_id)
            await mark_delayed(session, now, delayed_after)
            await batches.interrupt_expired(session, now)
        for _ in range(MAX_ROUNDS_PER_TICK):
            if self._stopping:
                return
            async with self.context.sessions() as session, session.begin():
                if await erase_finished_contacts(session, now) == 0:
                    break
        retention_days = self.context.settings.decision_retention_days
        for _ in range(MAX_ROUNDS_PER_TICK):
            if self._stopping:
                return
            async with self.context.sessions() as session, session.begin():
                if await prune_decisions(session, now, retention_days) == 0:
                    return

    async def end_stuck_sessions(self) -> None:
        """End the database sessions of a frozen worker stuck mid-statement (their claims
        come back); see `db/stuck_sessions.py`."""
        lease = timedelta(seconds=self.context.settings.claim_lease_seconds)
        await end_stuck_sessions(self.context.engine, lease)

    async def release_memory(self) -> None:
        """Keep a steady worker's RSS steady (see `runtime.release_memory`)."""
        release_memory()

    async def incident_clocks(self) -> None:
        """Report newly overdue incident clocks once; send incident notifications."""
        await incident_job.run_clock_job(self.context, self.http)

    async def _guarded(self, name: str, job: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await getattr(self, job)()
        except Exception as exc:  # a failing round must not kill the scheduler
            log.error("job_failed", job=name, error_type=type(exc).__name__)
        finally:
            if task is not None:
                self._running.discard(task)

    def start(self) -> None:
        tune_gc()
        settings = self.context.settings
        for job, seconds in (
            ("deliver", settings.claim_interval_seconds),
            ("relay_outbox", settings.relay_interval_seconds),
            ("maintain", settings.maintenance_interval_seconds),
            ("end_stuck_sessions", max(1.0, settings.claim_lease_seconds / 5)),
            ("incident_clocks", incident_job.INTERVAL_SECONDS),
            ("release_memory", MEMORY_RELEASE_SECONDS),
        ):
            self.scheduler.add_job(
                self._guarded,
                "interval",
                args=(job, job),
                seconds=seconds,
                id=job,
                max_instances=1,
                coalesce=True,
            )
        self.scheduler.start()
        log.info("worker_started")

    async def shutdown(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming, let running jobs finish (bounded), close clients."""
        self._stopping = True
        if self.scheduler.running:
            self.scheduler.pause()  # no new runs; APScheduler's shutdown would cancel ours
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=grace_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        released = await self.engine.release_held_claims()
        released += await self.relay.release_held_claims()
        if released:
            log.info("claims_released", count=released)
        await self.senders.aclose()
        await self.http.aclose()
        log.info("worker_stopped")
