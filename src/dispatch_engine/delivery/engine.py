"""One delivery round: claim → look up facts → (ask DND) → decide → write back, set-based.

The write-back runs in one transaction per batch: messages marked, fatigue ledger rows
and outbox rows written together (R-RUL-2), next lineup steps scheduled, and the claim
token checked so a worker whose lease was taken over writes nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog

from dispatch_engine.clients.dnd_webhook import DndAnswer, DndClient, DndQuery
from dispatch_engine.context import AppContext
from dispatch_engine.db.dialect import is_single_writer
from dispatch_engine.db.session import AsyncSession, IntegrityError
from dispatch_engine.delivery.facts import (
    DndSettings,
    contact_zone_for,
    message_facts,
    policy_of,
    step_facts,
)
from dispatch_engine.models import (
    Invite,
    LineupMessage,
    Message,
    new_id,
)
from dispatch_engine.observability import metrics
from dispatch_engine.rules.base import Decision, Defer, Hold, Pass, Suppress
from dispatch_engine.rules.business_hours import window_zone
from dispatch_engine.rules.delays import due_time
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.rules.pipeline import MessageFacts, decide, needs_dnd_check
from dispatch_engine.schemas.queue_message import encode_invitation, format_utc
from dispatch_engine.security.sealing import open_contact
from dispatch_engine.store.decisions import insert_decisions
from dispatch_engine.store.lookups import (
    BatchFacts,
    dnd_webhooks_of_dispatches,
    dnd_webhooks_of_messages,
    invites_with_later_steps,
    load_batch_facts,
    load_ledger,
    load_lock_holders,
    load_unsubscribes,
    lock_people,
)
from dispatch_engine.store.messages import (
    claim_due_messages,
    insert_ledger,
    insert_messages,
    lease_messages,
    lock_due_messages,
    release_claims,
    release_invite_locks,
    still_owned,
    update_invites,
    update_messages,
)
from dispatch_engine.store.outbox import insert_outbox

log = structlog.get_logger(__name__)

# Deciding a batch is a long stretch of pure Python (~0.1 ms a message). Handing the event
# loop back every this many messages keeps other rounds' webhook calls and database I/O
# moving instead of stalling them for the whole batch.
YIELD_EVERY = 50

# Contacts a round already decrypted, by their sealed text: a changed or erased contact has
# another (or no) sealed text, so it is never served stale.
OpenedContacts = dict[str, dict[str, Any]]


@dataclass
class RoundResult:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # reason (or outcome) → count
    by_outcome: Counter[tuple[str, str]] = field(default_factory=Counter)  # for the metrics
    claim_lags: list[float] = field(default_factory=list)  # seconds, decided messages

    def record(self) -> RoundResult:
        """Count the round in the metrics, once it is committed."""
        for (outcome, reason), count in self.by_outcome.items():
            metrics.MESSAGES.labels(outcome, reason).inc(count)
        metrics.observe_many(metrics.CLAIM_LAG, self.claim_lags)
        return self


class DeliveryEngine:
    """Moves due messages through the rule pipeline. Safe to run in several processes."""

    def __init__(
        self,
        context: AppContext,
        dnd_client: DndClient | None = None,
        *,
        batch_size: int | None = None,
        lease: timedelta | None = None,
        dnd: DndSettings | None = None,
    ) -> None:
        self.context = context
        self.dnd_client = dnd_client
        self.batch_size = batch_size or context.settings.claim_batch_size
        self.lease = lease or timedelta(seconds=context.settings.claim_lease_seconds)
        self.dnd = dnd or DndSettings()
        self.holding: dict[str, list[str]] = {}  # claim token → ids of rounds in flight
        single_writer = is_single_writer(context.engine)
        self.concurrency = 1 if single_writer else context.settings.claim_concurrency
        # PostgreSQL row locks can be the claim for rounds that call no webhook; SQLite has
        # none, and holding its one write lock while deciding would stall the API.
        self.locks_are_claims = not single_writer

    async def run_until_idle(
        self,
        max_rounds: int = 1000,
        *,
        concurrency: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> RoundResult:
        """Rounds until nothing is due, `max_rounds` were run, or `should_stop()`.

        On PostgreSQL several rounds run at once (`claim_concurrency`), each on its own
        connection: while one batch waits on the database another is being decided, which
        is what a single worker is otherwise bound by. SKIP LOCKED keeps them apart exactly as
        it keeps worker processes apart. SQLite has one writer, so it runs one round at a time.
        """
        lanes = concurrency or self.concurrency
        total = RoundResult()
        remaining = max_rounds

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0 and not should_stop():
                remaining -= 1
                result = await self.run_once()
                total.claimed += result.claimed
                total.outcomes.update(result.outcomes)
                if result.claimed == 0:
                    return

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, lanes)):
                group.create_task(lane())
        return total

    async def run_once(self) -> RoundResult:
        """One round: claim a batch, decide every message, write the decisions back."""
        now = self.context.clock.now()
        async with self.context.sessions() as session:
            claimed = await self._claim(session, now)
            if isinstance(claimed, RoundResult):  # nothing due, or decided under its locks
                return claimed.record()
            token, ids = claimed
            return (await self._decide_leased(session, ids, token, now)).record()

    async def _claim(
        self, session: AsyncSession, now: datetime
    ) -> RoundResult | tuple[str, list[str]]:
        """Take a due batch. On PostgreSQL a batch that calls no webhook is decided right
        here, under its row locks; any other batch is leased (claim token + lease) so that
        no lock is held while webhooks answer."""
        async with session.begin():
            if not self.locks_are_claims:
                token, ids = await claim_due_messages(
                    session, now=now, limit=self.batch_size, lease=self.lease
                )
                return (token, ids) if ids else RoundResult()
            rows = await lock_due_messages(session, now=now, limit=self.batch_size)
            if not rows:
                return RoundResult()
            ids = [row.id for row in rows]
            if not await self._needs_webhooks(session, {row.dispatch_id for row in rows}):
                return await self._decide_locked(session, ids, now, rows)
            return await lease_messages(session, ids, now=now, lease=self.lease), ids

    async def _decide_leased(
        self, session: AsyncSession, ids: list[str], token: str, now: datetime
    ) -> RoundResult:
        """Decide a leased batch; a shutdown that cuts it short hands the claims back."""
        self.holding[token] = ids
        try:
            result = await self._decide(session, ids, token, now)
        except asyncio.CancelledError:
            raise  # cut short (shutdown): the claims stay listed for release_held_claims
        except Exception:
            self.holding.pop(token, None)  # the lease brings them back
            raise
        self.holding.pop(token, None)
        return result

    async def _decide_locked(
        self, session: AsyncSession, ids: list[str], now: datetime, rows: list[Any]
    ) -> RoundResult:
        """Decide and write back inside the claiming transaction (its row locks are the
        claim); a fatigue-lock conflict rolls back to a savepoint and decides again."""
        for attempt in range(3):
            try:
                async with session.begin_nested():
                    return await self._decide_and_write(session, ids, None, now, {}, locked=rows)
            except IntegrityError:
                log.info("delivery_writeback_retry", attempt=attempt + 1)
        raise RuntimeError("write-back kept conflicting; the messages are due again")

    async def _decide(
        self, session: AsyncSession, ids: list[str], token: str, now: datetime
    ) -> RoundResult:
        answers, opened = await self._ask_dnd(session, ids, now)
        for attempt in range(3):
            try:
                async with session.begin():
                    return await self._decide_and_write(session, ids, token, now, answers, opened)
            except IntegrityError:
                # Another worker took a fatigue lock for the same person meanwhile:
                # decide again with fresh facts (the lock now makes it a suppression).
                log.info("delivery_writeback_retry", attempt=attempt + 1)
        raise RuntimeError("write-back kept conflicting; the lease will expire")

    async def release_held_claims(self) -> int:
        """Hand back the claims of rounds that were cut short (shutdown): the next worker
        takes them at once instead of waiting for the lease to expire."""
        released = 0
        for token, ids in list(self.holding.items()):
            async with self.context.sessions() as session, session.begin():
                await release_claims(session, ids, token)
            released += len(ids)
            self.holding.pop(token, None)
        return released

    async def _facts(
        self,
        session: AsyncSession,
        ids: list[str],
        now: datetime,
        *,
        for_write: bool = False,
        messages: list[Any] | None = None,
    ) -> BatchFacts:
        """The batch's facts; `for_write` also locks the rule-2 people until commit."""
        facts = await load_batch_facts(session, ids, messages)
        wanted: set[tuple[str, str, str]] = set()
        lock_keys: set[str] = set()
        rule2_hashes: set[str] = set()
        earliest = now
        for message in facts.messages:
            invite = facts.invites[message.invite_id]
            address_hash = invite.email_hash if message.channel == "email" else invite.mobile_hash
            if address_hash:
                wanted.add((message.account_id, message.channel, address_hash))
            if invite.first_sent_at is not None:
                continue
            shared = step_facts(facts, message)
            policy, rules = shared.policy, shared.rules.fatigue
            if rules.pending_token.enabled:
                lock_keys.add(
                    fatigue_lock_key(
                        policy.id, policy.fatigue_epoch, invite.sandbox, invite.uuid_hash
                    )
                )
            if rules.max_invites.enabled:
                rule2_hashes.add(invite.uuid_hash)
                earliest = min(earliest, now - timedelta(days=rules.max_invites.days))
        if for_write:
            await lock_people(session, rule2_hashes)
        facts.unsubscribed = await load_unsubscribes(session, wanted)
        # A lock held by an invite of this batch has that holder (the index is unique): only
        # the others are looked up, usually none, since each person's first row takes the lock.
        in_batch = {
            invite.fatigue_lock: invite
            for invite in facts.invites.values()
            if invite.fatigue_lock in lock_keys
        }
        facts.lock_holders = in_batch | await load_lock_holders(
            session, lock_keys - in_batch.keys()
        )
        facts.ledger = await load_ledger(session, rule2_hashes, earliest)
        facts.invites_with_later_steps = await invites_with_later_steps(
            session, [m for m in facts.messages if m.resend_of]
        )
        # Facts are read-only snapshots: detach them so the write-back's set-based
        # statements are the only writes (no per-row ORM flush of touched attributes).
        session.expunge_all()
        return facts

    async def _ask_dnd(
        self, session: AsyncSession, ids: list[str], now: datetime
    ) -> tuple[dict[str, str], OpenedContacts]:
        """DND answers for the messages that would otherwise go out now (outside any
        transaction: no row lock is held while a webhook is slow), and the contacts opened
        to ask, so that the write-back does not decrypt them a second time."""
        opened: OpenedContacts = {}
        if self.dnd_client is None or not await self._any_dnd(session, ids):
            return {}, opened
        async with session.begin():
            facts = await self._facts(session, ids, now)
            requests: list[tuple[str, str, DndQuery]] = []
            sent_in_batch: Counter[tuple[str, str | None]] = Counter()
            for index, message in enumerate(facts.messages):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                mf = message_facts(
                    facts, message, now, dnd_answer=None, dnd=self.dnd, sent_in_batch=sent_in_batch
                )
                if not needs_dnd_check(mf):
                    continue
                invite = facts.invites[message.invite_id]
                if invite.contact is None:
                    continue
                contact = open_contact(self.context.cipher, invite.id, invite.contact)
                opened[invite.contact] = contact
                address = contact["email"] if message.channel == "email" else contact["mobile"]
                policy = step_facts(facts, message).policy
                url = policy.dnd_webhooks[message.channel]
                query = DndQuery(message.channel, address, message.account_id, policy.id)
                requests.append((message.id, url, query))
        if not requests:
            return {}, opened
        answers = await self.dnd_client.check_many([(url, q) for _, url, q in requests])
        _count_dnd_answers([url for _, url, _ in requests], answers)
        return {
            mid: answer.status.value for (mid, _, _), answer in zip(requests, answers, strict=True)
        }, opened

    async def _any_dnd(self, session: AsyncSession, ids: list[str]) -> bool:
        async with session.begin():
            return await dnd_webhooks_of_messages(session, ids)

    async def _needs_webhooks(self, session: AsyncSession, dispatch_ids: set[str]) -> bool:
        """One cheap query: does the policy of any of these dispatches have a DND webhook
        at all?"""
        if self.dnd_client is None:
            return False
        return await dnd_webhooks_of_dispatches(session, dispatch_ids)

    async def _decide_and_write(
        self,
        session: AsyncSession,
        ids: list[str],
        token: str | None,
        now: datetime,
        answers: dict[str, str],
        opened: OpenedContacts | None = None,
        *,
        locked: list[Any] | None = None,
    ) -> RoundResult:
        """`token` None: the caller's transaction holds the rows' locks (the fast path), and
        `locked` are those rows as the claim read them."""
        owned = set(ids) if token is None else await still_owned(session, ids, token)
        if not owned:
            return RoundResult(claimed=len(ids))
        facts = await self._facts(session, sorted(owned), now, for_write=True, messages=locked)
        writer = _BatchWriter(self.context, facts, now, opened or {})
        sent_in_batch: Counter[tuple[str, str | None]] = Counter()
        for index, message in enumerate(facts.messages):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let other rounds' webhook calls and I/O go on
            mf = message_facts(
                facts,
                message,
                now,
                dnd_answer=answers.get(message.id),
                dnd=self.dnd,
                sent_in_batch=sent_in_batch,
            )
            if mf.dnd.configured and mf.dnd.answer is None and needs_dnd_check(mf):
                mf = _with_unknown_dnd(mf)
            decision = decide(mf)
            if isinstance(decision, Pass) and mf.first_send:
                # Later first messages of the same person in this batch see this send.
                invite = facts.invites[message.invite_id]
                person = f"{int(invite.sandbox)}:{invite.uuid_hash}"  # sandbox kept apart
                sent_in_batch[(person, invite.questionnaire_id)] += 1
                sent_in_batch[(person, None)] += 1
            writer.apply(message, decision)
        await writer.flush(session)
        return RoundResult(
            claimed=len(ids),
            outcomes=writer.outcomes,
            by_outcome=writer.by_outcome,
            claim_lags=writer.claim_lags,
        )


def _count_dnd_answers(urls: list[str], answers: list[DndAnswer]) -> None:
    """The batch's webhook calls in the metrics: one increment per host and outcome, one
    histogram update per host (per-call `labels()` lookups were a noticeable cost)."""
    hosts: dict[str, str] = {}
    outcomes: Counter[tuple[str, str]] = Counter()
    latencies: dict[str, list[float]] = {}
    for url, answer in zip(urls, answers, strict=True):
        host = hosts.get(url)
        if host is None:
            host = hosts[url] = urlsplit(url).hostname or "unknown"
        outcomes[(host, answer.status.value)] += 1
        latencies.setdefault(host, []).append(answer.elapsed_ms / 1000)
    for (host, status), count in outcomes.items():
        metrics.DND_REQUESTS.labels(host, status).inc(count)
    for host, seconds in latencies.items():
        metrics.observe_many(metrics.DND_LATENCY.labels(host), seconds)


def _with_unknown_dnd(mf: MessageFacts) -> MessageFacts:
    """A DND check that could not be made this round counts as unavailable, never allowed."""
    return replace(mf, dnd=replace(mf.dnd, answer="unavailable"))


class _BatchWriter:
    """Collects a batch's decisions, then writes them with a few executemany statements."""

    def __init__(
        self, context: AppContext, facts: BatchFacts, now: datetime, opened: OpenedContacts
    ) -> None:
        self.context = context
        self.facts = facts
        self.opened = opened
        self.now = now
        self.message_updates: list[dict[str, Any]] = []
        self.new_messages: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.invite_updates: dict[str, dict[str, Any]] = {}
        self.stale_locks: list[str] = []
        self.first_sends: set[str] = set()  # invites whose first message this batch sent
        self.outcomes: Counter[str] = Counter()
        self.by_outcome: Counter[tuple[str, str]] = Counter()  # for the metrics, once a batch
        self.claim_lags: list[float] = []
        self.sent_at = format_utc(now)  # the whole batch goes out at this instant
        self.next_steps: dict[tuple[str, int], LineupMessage | None] = {}
        self.utc_texts: dict[datetime, str] = {}  # due times, formatted (a batch shares few)
        # The trace: one tuple per decision, in `store.decisions.COLUMNS` order.
        self.decisions: list[tuple[Any, ...]] = []
        self.worker = context.settings.worker_id
        self.versions: dict[str, int] = {}  # dispatch id → the version of its policy

    def _invite_update(self, invite: Invite, **values: Any) -> None:
        self.invite_updates.setdefault(invite.id, {"id": invite.id}).update(values)

    def _count(self, message: Message, outcome: str, reason: str | None) -> None:
        self.outcomes[reason or outcome] += 1
        self.by_outcome[(outcome, reason or "")] += 1
        if outcome != "held":
            self.claim_lags.append(max(0.0, (self.now - message.not_before).total_seconds()))

    def _trace(
        self,
        message: Message,
        kind: str,
        rule: str | None,
        reason: str | None,
        until: datetime | None = None,
    ) -> None:
        """The decision's row in the trace (written with the batch, one COPY)."""
        version = self.versions.get(message.dispatch_id)
        if version is None:
            version = policy_of(self.facts, message).version
            self.versions[message.dispatch_id] = version
        row = (message.id, message.invite_id, self.now, kind, rule, reason, until, version)
        self.decisions.append((*row, self.worker))

    def apply(self, message: Message, decision: Decision) -> None:
        base = {
            "id": message.id,
            "claim_token": None,
            "lease_until": None,
            "handled_by": self.worker,
        }
        invite = self.facts.invites[message.invite_id]
        if isinstance(decision, Pass):
            self._send(message, invite)
            self.message_updates.append(
                {
                    **base,
                    "state": "sent",
                    "rule": None,
                    "reason": None,
                    "sent_at": self.now,
                    "decided_at": self.now,
                    "not_before": message.not_before,
                    "attempts": message.attempts,
                }
            )
            self._count(message, "sent", None)
            self._trace(message, "sent", None, None)
            self._schedule_next(message, invite)
        elif isinstance(decision, Suppress):
            self.message_updates.append(
                {
                    **base,
                    "state": "suppressed",
                    "rule": decision.rule,
                    "reason": decision.reason,
                    "sent_at": None,
                    "decided_at": self.now,
                    "not_before": message.not_before,
                    "attempts": message.attempts,
                }
            )
            self._count(message, "suppressed", decision.reason)
            self._trace(message, "suppressed", decision.rule, decision.reason)
            if decision.next_step:
                self._schedule_next(message, invite)
            else:
                self._end_invite(invite, decision.reason)
        elif isinstance(decision, Defer):
            attempts = message.attempts + (1 if decision.rule == "dnd" else 0)
            self.message_updates.append(
                {
                    **base,
                    "state": "deferred",
                    "rule": decision.rule,
                    "reason": decision.reason,
                    "sent_at": None,
                    "decided_at": self.now,
                    "not_before": decision.until,
                    "attempts": attempts,
                }
            )
            self._count(message, "deferred", decision.reason)
            self._trace(message, "deferred", decision.rule, decision.reason, decision.until)
        elif isinstance(decision, Hold):
            self.message_updates.append(
                {
                    **base,
                    "state": "held",
                    "rule": decision.rule,
                    "reason": decision.reason,
                    "sent_at": None,
                    "decided_at": self.now,
                    "not_before": message.not_before,
                    "attempts": message.attempts,
                }
            )
            self._count(message, "held", decision.reason)
            self._trace(message, "held", decision.rule, decision.reason)

    def _send(self, message: Message, invite: Invite) -> None:
        dispatch = self.facts.dispatches[message.dispatch_id]
        shared = step_facts(self.facts, message)
        step = shared.step
        assert step is not None and invite.contact is not None
        contact = self.opened.get(invite.contact) or open_contact(
            self.context.cipher, invite.id, invite.contact
        )
        address = contact["email"] if message.channel == "email" else contact["mobile"]
        body = encode_invitation(
            message_id=message.id,
            invite_id=invite.id,
            token=invite.token,
            account=message.account_id,
            dispatch=message.dispatch_id,
            questionnaire=invite.questionnaire_id,
            channel=message.channel,  # type: ignore[arg-type]
            address=address,
            message_template=dispatch.message_templates[step.id],
            lineup_position=step.position or message.position,
            lineup_message_id=step.id,
            scheduled_at=self._utc_text(message.due_at),
            sent_at=self.sent_at,
            attributes=contact.get("attributes") or {},
            sandbox=invite.sandbox,
            resend_of=message.resend_of,
        )
        self.outbox.append(
            {
                "message_id": message.id,
                "account_id": message.account_id,
                "invite_id": invite.id,
                "body": body,
                "created_at": self.now,
                "ready_at": message.not_before,
                "next_attempt_at": self.now,
                "attempts": 0,
            }
        )
        if invite.first_sent_at is None and invite.id not in self.first_sends:
            self.first_sends.add(invite.id)
            policy = shared.policy
            self.ledger.append(
                {
                    "account_id": message.account_id,
                    "policy_id": policy.id,
                    "fatigue_epoch": policy.fatigue_epoch,
                    "questionnaire_id": invite.questionnaire_id,
                    "invite_id": invite.id,
                    "uuid_hash": invite.uuid_hash,
                    "sandbox": invite.sandbox,
                    "sent_at": self.now,
                }
            )
            values: dict[str, Any] = {"first_sent_at": self.now}
            pending_token = shared.rules.fatigue.pending_token.enabled
            if pending_token and invite.fatigue_lock is None:
                key = fatigue_lock_key(
                    policy.id, policy.fatigue_epoch, invite.sandbox, invite.uuid_hash
                )
                holder = self.facts.lock_holders.get(key)
                if holder is not None and holder.id != invite.id:
                    # The rules passed, so that holder's token expired or was answered:
                    # its stale lock is handed over (released first, in flush()).
                    self.stale_locks.append(holder.id)
                self.facts.lock_holders[key] = invite
                values["fatigue_lock"] = key
            self._invite_update(invite, **values)

    def _schedule_next(self, message: Message, invite: Invite) -> None:
        if message.resend_of and invite.id in self.facts.invites_with_later_steps:
            return  # the original already moved the invite on; a resend must not do it twice
        step = step_facts(self.facts, message).step
        after = step.position if step is not None and step.position else message.position - 1
        nxt = self._step_after(message.policy_id, after)
        if nxt is None:
            values: dict[str, Any] = {"state": "completed", "end_reason": "lineup_done"}
            if invite.first_sent_at is None and invite.id not in self.first_sends:
                values["fatigue_lock"] = None  # every step skipped: no token reached them
            self._invite_update(invite, **values)
            return
        rules = step_facts(self.facts, message).rules
        zone = window_zone(rules.hours, contact_zone_for(invite, rules))
        due = due_time(self.now, nxt.delay, zone)
        self.new_messages.append(
            {
                "id": new_id("m"),
                "invite_id": invite.id,
                "account_id": message.account_id,
                "dispatch_id": message.dispatch_id,
                "policy_id": message.policy_id,
                "lineup_message_id": nxt.id,
                "position": nxt.position or 0,
                "channel": nxt.channel,
                "priority": message.priority,
                "state": "pending",
                "due_at": due,
                "not_before": due,
                "attempts": 0,
                "created_at": self.now,
            }
        )

    def _utc_text(self, moment: datetime) -> str:
        text = self.utc_texts.get(moment)
        if text is None:
            text = self.utc_texts[moment] = format_utc(moment)
        return text

    def _step_after(self, policy_id: str, position: int) -> LineupMessage | None:
        """The first live lineup step after `position` (memoised: a batch asks the same few)."""
        key = (policy_id, position)
        if key not in self.next_steps:
            lineup = self.facts.live_lineups.get(policy_id, [])
            self.next_steps[key] = next((s for s in lineup if (s.position or 0) > position), None)
        return self.next_steps[key]

    def _end_invite(self, invite: Invite, reason: str) -> None:
        values: dict[str, Any] = {"state": "ended", "end_reason": reason, "ended_at": self.now}
        if invite.first_sent_at is None or reason in ("responded", "token_expired"):
            values["fatigue_lock"] = None  # nothing pending any more for rule 1
        self._invite_update(invite, **values)

    async def flush(self, session: AsyncSession) -> None:
        """A handful of set-based statements for the whole batch."""
        await update_messages(session, self.message_updates)
        await insert_messages(session, self.new_messages)
        await insert_outbox(session, self.outbox)
        await insert_ledger(session, self.ledger)
        await insert_decisions(session, self.decisions)
        await self._flush_invites(session)

    async def _flush_invites(self, session: AsyncSession) -> None:
        if self.stale_locks:  # released before any invite takes the lock over
            await release_invite_locks(session, self.stale_locks)
        await update_invites(session, self.invite_updates.values())
