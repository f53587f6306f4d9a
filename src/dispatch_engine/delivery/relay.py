"""The outbox relay: pushes outbox rows to each account's queue, deletes them only after
the queue acknowledged, retries failures with backoff, and gives up as `failed`."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from dispatch_engine.context import AppContext
from dispatch_engine.db import leases
from dispatch_engine.db.dialect import is_single_writer
from dispatch_engine.db.engine import allow_idle_in_transaction
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.delivery.breaker import CircuitBreaker
from dispatch_engine.models import QueueIntegration
from dispatch_engine.observability import metrics
from dispatch_engine.queues.base import OutgoingMessage, QueueSender, SendFailure
from dispatch_engine.queues.factory import SenderCache
from dispatch_engine.store import messages as message_store
from dispatch_engine.store import outbox
from dispatch_engine.store.outbox import DueRow

log = structlog.get_logger(__name__)
NO_SENDER = "no queue sender for this integration"
CIRCUIT_OPEN = "circuit open: the queue kept failing; retrying after the cooldown"


@dataclass
class RelayResult:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.failed


def _queue_health_change(
    integration: QueueIntegration, entries: list[DueRow], pushed: list[SendFailure]
) -> tuple[QueueIntegration, str | None] | None:
    """What the integration should show after a push, when that differs from what it shows:
    the queue's own refusal (not a message's), or nothing once some message went through."""
    refusal = next((f.error[:1000] for f in pushed if f.about_queue), None)
    if refusal is None and len(pushed) == len(entries):
        return None  # every message refused for itself: says nothing about the queue
    if refusal == integration.push_error:
        return None
    return integration, refusal


class OutboxRelay:
    def __init__(self, context: AppContext, senders: SenderCache) -> None:
        self.context = context
        self.senders = senders
        settings = context.settings
        self.batch_size = settings.relay_batch_size
        self.max_attempts = settings.relay_max_attempts
        self.base = settings.relay_backoff_seconds
        self.cap = settings.relay_backoff_max_seconds
        self.lease = timedelta(seconds=max(30, settings.claim_lease_seconds))
        # `delayed` is marked by any worker's clock: a minute's margin for clocks that differ.
        self.maybe_delayed_after = timedelta(seconds=settings.delayed_after_seconds - 60)
        self.holding: dict[str, list[int]] = {}  # claim token → outbox ids in flight
        sqlite = is_single_writer(context.engine)
        self.parallel = 1 if sqlite else settings.relay_parallel
        self.locks_are_claims = not sqlite  # SQLite's one write lock can't be held over a push
        self.breaker = CircuitBreaker(
            threshold=settings.relay_breaker_threshold,
            cooldown=timedelta(seconds=settings.relay_breaker_cooldown_seconds),
        )

    async def run_until_idle(
        self, max_rounds: int = 1000, should_stop: Callable[[], bool] | None = None
    ) -> RelayResult:
        """Rounds until the outbox has nothing due, with `parallel` rounds in flight so the
        database work of one overlaps the queue pushes of another (PostgreSQL: SKIP LOCKED
        keeps their claims apart; SQLite runs one at a time)."""
        total = RelayResult()

        async def lane() -> None:
            for _ in range(max_rounds):
                if should_stop is not None and should_stop():
                    return
                result = await self.run_once()
                total.delivered += result.delivered
                total.retried += result.retried
                total.failed += result.failed
                if result.handled == 0:
                    return

        await asyncio.gather(*(lane() for _ in range(self.parallel)))
        return total

    async def observe_depth(self) -> None:
        """Outbox depth and oldest age, and the integrations whose queue refuses pushes, for
        the gauges (an indexed query and a count over the small integrations table)."""
        async with self.context.sessions() as session, session.begin():
            depth, oldest = await outbox.depth(session)
            refusing = await outbox.integrations_refusing(session)
        metrics.QUEUE_INTEGRATIONS_REFUSING.set(refusing)
        metrics.OUTBOX_DEPTH.set(depth)
        age = (self.context.clock.now() - oldest).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_AGE.set(max(0.0, age))

    async def run_once(self) -> RelayResult:
        """One round: take due outbox rows, push them, record what the queue said."""
        now = self.context.clock.now()
        async with self.context.sessions() as session:
            if self.locks_are_claims:
                # PostgreSQL: the rows' locks are the claim for the whole round (select, push,
                # record in one transaction). A relay that dies mid-push loses its connection,
                # the transaction rolls back and the rows are due again at once (pushed again
                # with the same message id: at least once).
                async with session.begin():
                    # The push is this claim's idle time; its bound is the relay's lease.
                    await allow_idle_in_transaction(session, self.lease.total_seconds())
                    rows = await self._due_rows(session, now)
                    if not rows:
                        return RelayResult()
                    kinds = await self._integrations(session, rows)
                    return await self._push_and_record(session, None, rows, kinds, now)
            async with session.begin():
                token, rows, kinds = await self._claim(session, now)
            if not rows:
                return RelayResult()
            return await self._push_leased(session, token, rows, kinds, now)

    async def _push_leased(
        self,
        session: AsyncSession,
        token: str,
        rows: list[DueRow],
        kinds: dict[str, QueueIntegration],
        now: datetime,
    ) -> RelayResult:
        """Push leased rows; a shutdown that cuts the round short hands them back."""
        self.holding[token] = [row.id for row in rows]
        try:
            result = await self._push_and_record(session, token, rows, kinds, now)
        except asyncio.CancelledError:
            raise  # shutdown hands these rows back (release_held_claims)
        except Exception:
            self.holding.pop(token, None)
            raise
        self.holding.pop(token, None)
        return result

    async def release_held_claims(self) -> int:
        """Hand back outbox rows of a round cut short, so the next relay takes them at once
        (if the queue had accepted them already they go again, with the same message id)."""
        released = 0
        for token, ids in list(self.holding.items()):
            async with self.context.sessions() as session, session.begin():
                await outbox.release_rows(session, ids, token)
            released += len(ids)
            self.holding.pop(token, None)
        return released

    async def _push_and_record(
        self,
        session: AsyncSession,
        token: str | None,
        rows: list[DueRow],
        kinds: dict[str, QueueIntegration],
        now: datetime,
    ) -> RelayResult:
        by_account: dict[str, list[DueRow]] = defaultdict(list)
        for row in rows:
            by_account[row.account_id].append(row)
        failures: dict[str, SendFailure] = {}
        skipped: dict[int, tuple[str, datetime]] = {}
        health: list[tuple[QueueIntegration, str | None]] = []
        for account_id, entries in by_account.items():
            integration = kinds.get(account_id)
            sender = await self.senders.get(integration) if integration else None
            if integration is None or sender is None:
                later = (NO_SENDER, now + timedelta(seconds=30))
                skipped.update((e.id, later) for e in entries)
                continue
            key = f"{integration.account_id}:{integration.version}"
            open_until = self.breaker.open_until(key, now)
            if open_until is not None:
                skipped.update((e.id, (CIRCUIT_OPEN, open_until)) for e in entries)
                continue
            pushed = await self._push(sender, entries, integration.kind)
            outage = len(pushed) == len(entries) and all(f.retryable for f in pushed)
            self.breaker.record(key, ok=not outage, now=now)
            for failure in pushed:
                failures[failure.message_id] = failure
            change = _queue_health_change(integration, entries, pushed)
            if change is not None:
                health.append(change)
        if token is None:  # the caller's transaction holds the rows
            await self._record_queue_health(session, health, now)
            return await self._write_back(session, token, rows, failures, skipped, now)
        async with session.begin():
            await self._record_queue_health(session, health, now)
            return await self._write_back(session, token, rows, failures, skipped, now)

    async def _record_queue_health(
        self,
        session: AsyncSession,
        changes: list[tuple[QueueIntegration, str | None]],
        now: datetime,
    ) -> None:
        """Show a refusal of the whole push on the integration, or clear it once a push went
        through (only on a change, so an outage writes once, not every round). Fenced by
        version: a replaced integration starts clean."""
        for integration, error in changes:
            await outbox.record_push_health(
                session, integration.account_id, integration.version, error, now
            )
            if error is None:
                log.info("queue_push_recovered", account=integration.account_id)
            else:
                log.warning(
                    "queue_push_refused", account=integration.account_id, kind=integration.kind
                )

    async def _due_rows(self, session: AsyncSession, now: datetime) -> list[DueRow]:
        """Due outbox rows in order (locked on PostgreSQL: the locks are the claim)."""
        return await outbox.due_rows(session, now, self.batch_size)

    async def _integrations(
        self, session: AsyncSession, rows: list[DueRow]
    ) -> dict[str, QueueIntegration]:
        return await outbox.integrations_of(session, {r.account_id for r in rows})

    async def _claim(
        self, session: AsyncSession, now: datetime
    ) -> tuple[str, list[DueRow], dict[str, QueueIntegration]]:
        """The lease path (SQLite): claim token + lease, committed before the push."""
        rows = await self._due_rows(session, now)
        if not rows:
            return leases.new_token(), [], {}
        ids = [r.id for r in rows]
        token = await outbox.lease_rows(session, ids, now=now, lease=self.lease)
        return token, rows, await self._integrations(session, rows)

    async def _push(
        self, sender: QueueSender, entries: list[DueRow], kind: str
    ) -> list[SendFailure]:
        messages = [OutgoingMessage(e.message_id, e.invite_id, e.body) for e in entries]
        started = time.perf_counter()
        try:
            failures = await sender.send_batch(messages)
        except Exception as exc:  # a sender bug or outage must not lose the batch
            error = f"{type(exc).__name__}: queue push failed"
            log.warning("relay_push_error", error_type=type(exc).__name__, kind=kind)
            failures = [SendFailure(m.message_id, error, True, about_queue=True) for m in messages]
        metrics.QUEUE_PUSH_LATENCY.labels(kind).observe(time.perf_counter() - started)
        failed = {f.message_id for f in failures}
        metrics.QUEUE_PUSHES.labels(kind, "ok").inc(len(messages) - len(failed))
        if failed:
            metrics.QUEUE_PUSHES.labels(kind, "error").inc(len(failed))
        done = self.context.clock.now().timestamp()
        metrics.observe_many(
            metrics.PIPELINE_LATENCY,
            (
                max(0.0, done - entry.ready_at)
                for entry in entries
                if entry.message_id not in failed
            ),
        )
        return failures

    async def _write_back(
        self,
        session: AsyncSession,
        token: str | None,
        rows: list[DueRow],
        failures: dict[str, SendFailure],
        skipped: dict[int, tuple[str, datetime]],
        now: datetime,
    ) -> RelayResult:
        result = RelayResult()
        delivered: list[DueRow] = []
        retry: list[dict[str, Any]] = []
        failed_messages: list[dict[str, Any]] = []
        for row in rows:
            if row.id in skipped:
                why, when = skipped[row.id]
                retry.append(
                    {
                        "b_id": row.id,
                        "attempts": row.attempts,
                        "next_attempt_at": when,
                        "last_error": why,
                        "failed_at": None,
                    }
                )
                continue
            failure = failures.get(row.message_id)
            if failure is None:
                delivered.append(row)
                continue
            attempts = row.attempts + 1
            give_up = not failure.retryable or attempts >= self.max_attempts
            retry.append(
                {
                    "b_id": row.id,
                    "attempts": attempts,
                    "next_attempt_at": now + leases.backoff(attempts, self.base, self.cap),
                    "last_error": failure.error[:1000],
                    "failed_at": now if give_up else None,
                }
            )
            if give_up:
                failed_messages.append({"b_id": row.message_id, "reason": failure.error[:200]})
                result.failed += 1
            else:
                result.retried += 1
        if delivered:
            # The queue holds them now: the rows go (a delete is a fraction of an update's
            # work in PostgreSQL, and no copy of the address stays behind in the outbox).
            await outbox.delete_delivered(session, token, [r.id for r in delivered])
            result.delivered = len(delivered)
            # A push that was late (`delayed`) is now done: the message reads `sent` again.
            # Only a message due before the `delayed` cutoff can have been marked (its sent_at
            # is never earlier than its ready_at), so a round of fresh rows skips the update.
            cutoff = (now - self.maybe_delayed_after).timestamp()
            if min(r.ready_at for r in delivered) <= cutoff:
                await message_store.mark_sent_again(session, [r.message_id for r in delivered])
        await outbox.write_back(session, token, retry)  # the claim ends with it
        if failed_messages:
            await message_store.mark_failed(
                session, failed_messages, now, self.context.settings.worker_id
            )
        return result
