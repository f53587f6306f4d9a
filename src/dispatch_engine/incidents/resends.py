"""Approvals and resends (R-INC-5).

Resend window = now − scheduled time (the message's `due_at`). Within the threshold
(`resend_threshold_minutes`, default 60) an operator may resend; beyond it only under an
approval from the account's owner or an admin that covers the sending. A resend is a new
`pending` message (`resend_of` = original) that goes through the whole rule pipeline again.
At most once per approval — or once within the threshold — is enforced by the unique key
(original message, approval id | `threshold`) of `incident_resends`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch_engine.db.session import AsyncSession, IntegrityError
from dispatch_engine.errors import DomainError, FieldError, ValidationFailed
from dispatch_engine.incidents.impacted import ImpactedQuery, is_impacted
from dispatch_engine.models import (
    Account,
    IncidentApproval,
    IncidentResend,
    Message,
    new_id,
)
from dispatch_engine.schemas.common import AccountId, StrictModel, UtcTime
from dispatch_engine.security.normalize import InvalidAddress, normalize_email
from dispatch_engine.store import resends as store
from dispatch_engine.store.accounts import find_account
from dispatch_engine.store.paging import PageRequest

THRESHOLD_KEY = "threshold"
Outcome = Literal["allowed", "needs_approval", "not_resendable", "already_resent", "resent"]


class ApprovalIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account": "acme",
                    "approver_email": "owner@acme.example",
                    "approver_name": "Olivia Owner",
                    "channel": "phone",
                    "approved_at": "2026-03-02T10:15:00Z",
                    "note": "Resend everything that failed this morning",
                }
            ]
        }
    )

    account: AccountId
    approver_email: str = Field(max_length=320, description="Owner or admin, as on the account.")
    approver_name: str | None = Field(default=None, max_length=200)
    channel: Literal["email", "in_app", "phone"]
    approved_at: UtcTime
    note: str | None = Field(default=None, max_length=5000)
    sendings: list[str] | None = Field(
        default=None,
        max_length=100_000,
        description="Sending ids covered; omit for all of the account's impacted sendings.",
    )

    @field_validator("approver_email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return normalize_email(value)
        except InvalidAddress as exc:
            raise ValueError(exc.reason) from None


class ApprovalOut(BaseModel):
    id: str
    incident: str
    account: str
    approver_name: str | None
    approver_email: str
    role: Literal["owner", "admin"]
    channel: str
    approved_at: datetime
    note: str | None
    scope: Literal["listed", "all_impacted"]
    sendings: list[str]
    recorded_at: datetime


class ResendIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"sendings": ["m_06h23zk8ra1b2c3d4e5f6a7b8c9d"], "dry_run": True, "account": "acme"}
            ]
        }
    )

    sendings: list[str] = Field(min_length=1, max_length=1000, description="Message ids.")
    dry_run: bool = False
    account: AccountId | None = Field(
        default=None, description="When given, every sending must belong to this account."
    )


class ResendItem(BaseModel):
    sending: str
    outcome: Outcome
    reason: str
    account: str | None = None
    scheduled_at: datetime | None = None
    window_minutes: float | None = None
    approval: str | None = None
    resend: str | None = Field(default=None, description="The new message id.")


class ResendRecord(BaseModel):
    id: str
    account: str
    sending: str = Field(description="The original message id.")
    resend: str = Field(description="The new message id.")
    approval: str | None = Field(description="Null: re-sent within the threshold.")
    window_minutes: float
    created_at: datetime


class ResendOut(BaseModel):
    dry_run: bool
    threshold_minutes: int
    results: list[ResendItem]
    counts: dict[str, int]


REFUSALS: frozenset[Outcome] = frozenset({"needs_approval", "not_resendable"})


def refusal_of(out: ResendOut) -> DomainError | None:
    """A real run that re-sent nothing and refused every sending is refused as a whole
    (409, each sending's reason; nothing was sent). A run where some went, or were already
    re-sent, answers 200 with the outcome of each."""
    if out.dry_run or not out.results or any(i.outcome not in REFUSALS for i in out.results):
        return None
    errors = [
        FieldError(f"sendings.{n}", f"{item.sending}: {item.outcome}: {item.reason}")
        for n, item in enumerate(out.results)
    ]
    shown = "; ".join(e.reason for e in errors[:5])  # a call may name up to 1000
    more = f"; and {len(errors) - 5} more (see errors)" if len(errors) > 5 else ""
    return DomainError(
        detail=f"nothing was re-sent: {shown}{more}",
        errors=errors,
        extra=out.model_dump(mode="json"),
        status=409,
        slug="resend-refused",
        title="Resend refused",
    )


def _email_of(contact: Any) -> str | None:
    if not isinstance(contact, dict) or not contact.get("email"):
        return None
    try:
        return normalize_email(str(contact["email"]))
    except InvalidAddress:
        return None


def approver_role(account: Account, email: str) -> Literal["owner", "admin"] | None:
    """`owner` or `admin` when the email is the account's owner's or one of its admins'."""
    if _email_of(account.owner) == email:
        return "owner"
    if any(_email_of(admin) == email for admin in account.admins or []):
        return "admin"
    return None


async def record_approval(
    session: AsyncSession,
    incident_id: str,
    body: ApprovalIn,
    q: ImpactedQuery,
    now: datetime,
    key_id: str | None,
) -> tuple[IncidentApproval, list[str]]:
    account = await find_account(session, body.account)
    if account is None:
        raise ValidationFailed("account", f"unknown account '{body.account}'")
    role = approver_role(account, body.approver_email)
    if role is None:
        raise ValidationFailed(
            "approver_email",
            f"is neither the owner nor an admin of account '{account.id}' as recorded on it",
        )
    if body.approved_at > now:
        raise ValidationFailed("approved_at", "must not be in the future")
    impacted = await store.impacted_ids(session, q)
    if body.sendings is None:
        covered = impacted
    else:
        covered = list(dict.fromkeys(body.sendings))
        unknown = sorted(set(covered) - set(impacted))
        if unknown:
            raise ValidationFailed(
                "sendings",
                f"not impacted sendings of account '{account.id}' in this incident: "
                + ", ".join(unknown[:20]),
            )
    if not covered:
        raise ValidationFailed("sendings", "the approval covers no impacted sending")
    approval = IncidentApproval(
        id=new_id("apr"),
        incident_id=incident_id,
        account_id=account.id,
        approver_name=body.approver_name,
        approver_email=body.approver_email,
        role=role,
        channel=body.channel,
        approved_at=body.approved_at,
        note=body.note,
        scope="all_impacted" if body.sendings is None else "listed",
        recorded_at=now,
        recorded_by=key_id,
    )
    session.add(approval)
    await session.flush()
    await store.add_approval_sendings(session, approval.id, covered)
    return approval, covered


def approval_out(approval: IncidentApproval, sendings: list[str]) -> ApprovalOut:
    return ApprovalOut(
        id=approval.id,
        incident=approval.incident_id,
        account=approval.account_id,
        approver_name=approval.approver_name,
        approver_email=approval.approver_email,
        role=approval.role,
        channel=approval.channel,
        approved_at=approval.approved_at,
        note=approval.note,
        scope=approval.scope,
        sendings=sendings,
        recorded_at=approval.recorded_at,
    )


async def list_approvals(
    session: AsyncSession, incident_id: str, page: PageRequest
) -> tuple[list[ApprovalOut], str | None]:
    """A page of the incident's approvals, each with the sendings it covers."""
    approvals, next_cursor = await store.approvals_of_incident(session, incident_id, page)
    covered: dict[str, list[str]] = {a.id: [] for a in approvals}
    if approvals:
        for approval_id, message_id in await store.sendings_of_approvals(session, covered):
            covered[approval_id].append(message_id)
    return [approval_out(a, covered[a.id]) for a in approvals], next_cursor


@dataclass
class _Facts:
    messages: dict[str, Message]
    contact_erased: set[str]
    approvals: dict[str, list[str]]  # message id -> covering approval ids, newest first
    resends: dict[tuple[str, str], str]  # (original, approval key) -> new message id
    in_flight: set[str]  # delayed messages whose queue push is running right now


async def _facts(session: AsyncSession, incident_id: str, ids: list[str], now: datetime) -> _Facts:
    messages = await store.messages_by_id(session, ids)
    invite_ids = {m.invite_id for m in messages.values()}
    erased = await store.erased_invite_ids(session, invite_ids)
    approvals: dict[str, list[str]] = {}
    for message_id, approval_id in await store.covering_approvals(session, incident_id, ids):
        approvals.setdefault(message_id, []).append(approval_id)
    resends = await store.resends_of_messages(session, ids)
    in_flight = await store.messages_being_pushed(session, ids, now)
    return _Facts(
        messages=messages,
        contact_erased={m.id for m in messages.values() if m.invite_id in erased},
        approvals=approvals,
        resends=resends,
        in_flight=in_flight,
    )


def _assess(
    sending: str,
    facts: _Facts,
    q: ImpactedQuery,
    account: str | None,
    now: datetime,
    threshold: int,
) -> tuple[ResendItem, str | None]:
    """The verdict for one sending, and the approval key a resend would use."""
    message = facts.messages.get(sending)
    if message is None:
        return ResendItem(sending=sending, outcome="not_resendable", reason="unknown sending"), None
    window = now - message.due_at
    item = ResendItem(
        sending=sending,
        outcome="not_resendable",
        reason="",
        account=message.account_id,
        scheduled_at=message.due_at,
        window_minutes=round(window.total_seconds() / 60, 2),
    )
    refusal = None
    if account is not None and message.account_id != account:
        refusal = f"belongs to another account than '{account}'"
    elif not is_impacted(message):
        refusal = f"its state is '{message.state}': only failed or delayed sendings are re-sent"
    elif not q.start <= message.due_at <= q.end:
        refusal = "it was scheduled outside the incident's time range"
    elif sending in facts.contact_erased:
        refusal = "the contact's data has been erased"
    elif sending in facts.in_flight:
        refusal = "a queue push of it is in progress; try again shortly"
    if refusal:
        item.reason = refusal
        return item, None
    if window <= timedelta(minutes=threshold):
        key, why = THRESHOLD_KEY, f"window {item.window_minutes} min is within {threshold} min"
    else:
        covering = facts.approvals.get(sending, [])
        if not covering:
            item.outcome = "needs_approval"
            item.reason = (
                f"window {item.window_minutes} min exceeds the {threshold}-minute threshold "
                "and no approval by the account's owner or an admin covers it"
            )
            return item, None
        key, why = covering[0], f"approved by {covering[0]}"
        item.approval = key
    existing = facts.resends.get((sending, key))
    if existing is not None:
        item.outcome, item.resend = "already_resent", existing
        item.reason = f"already re-sent as {existing} ({'under ' + key if item.approval else why})"
        return item, None
    item.outcome, item.reason = "allowed", why
    return item, key


async def _withdraw(session: AsyncSession, message: Message, now: datetime) -> bool:
    """A delayed original must not go out as well: take back its unpushed queue write and
    stop the claim loop from picking it (fencing any worker holding its claim)."""
    if message.state != "delayed":
        return True
    return await store.withdraw_delayed_message(session, message.id, now)


class _Lost(Exception):
    """The original changed under us (it went out meanwhile): undo this one resend."""


async def _resend_one(
    session: AsyncSession,
    incident_id: str,
    item: ResendItem,
    key: str,
    message: Message,
    now: datetime,
    key_id: str | None,
) -> None:
    new_message_id = new_id("m")
    try:
        async with session.begin_nested():
            session.add(
                IncidentResend(
                    id=new_id("rsd"),
                    incident_id=incident_id,
                    account_id=message.account_id,
                    original_message_id=message.id,
                    approval_key=key,
                    approval_id=None if key == THRESHOLD_KEY else key,
                    new_message_id=new_message_id,
                    window_seconds=int((now - message.due_at).total_seconds()),
                    created_at=now,
                    created_by=key_id,
                )
            )
            await session.flush()
            if not await _withdraw(session, message, now):
                raise _Lost
            session.add(_copy(message, new_message_id, now))
            await session.flush()
    except IntegrityError:  # a concurrent call resent it first: same answer as a retry
        existing = await store.resend_under(session, message.id, key)
        item.outcome, item.resend = "already_resent", existing
        item.reason = f"already re-sent as {existing}"
        return
    except _Lost:
        item.outcome = "not_resendable"
        item.reason = "the original went out or is being pushed meanwhile"
        return
    item.outcome, item.resend = "resent", new_message_id


def _copy(original: Message, new_message_id: str, now: datetime) -> Message:
    """Same invite, step, channel and dispatch; decided afresh by the pipeline from now."""
    return Message(
        id=new_message_id,
        invite_id=original.invite_id,
        account_id=original.account_id,
        dispatch_id=original.dispatch_id,
        policy_id=original.policy_id,
        lineup_message_id=original.lineup_message_id,
        position=original.position,
        channel=original.channel,
        priority=original.priority,
        state="pending",
        due_at=original.due_at,
        not_before=now,
        attempts=0,
        resend_of=original.id,
        created_at=now,
    )


async def resend(
    session: AsyncSession,
    incident_id: str,
    body: ResendIn,
    q: ImpactedQuery,
    now: datetime,
    threshold: int,
    key_id: str | None,
) -> ResendOut:
    """Assess every sending; unless a dry run, resend the allowed ones (nothing else)."""
    ids = list(dict.fromkeys(body.sendings))
    facts = await _facts(session, incident_id, ids, now)
    results: list[ResendItem] = []
    for sending in ids:
        item, key = _assess(sending, facts, q, body.account, now, threshold)
        if key is not None and not body.dry_run:
            await _resend_one(session, incident_id, item, key, facts.messages[sending], now, key_id)
        results.append(item)
    counts: dict[str, int] = {}
    for item in results:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
    return ResendOut(
        dry_run=body.dry_run, threshold_minutes=threshold, results=results, counts=counts
    )


async def list_resends(
    session: AsyncSession, incident_id: str, page: PageRequest
) -> tuple[list[ResendRecord], str | None]:
    """A page of the incident's resends, oldest first."""
    resends, next_cursor = await store.resends_of_incident(session, incident_id, page)
    return [
        ResendRecord(
            id=r.id,
            account=r.account_id,
            sending=r.original_message_id,
            resend=r.new_message_id,
            approval=r.approval_id,
            window_minutes=round(r.window_seconds / 60, 2),
            created_at=r.created_at,
        )
        for r in resends
    ], next_cursor
