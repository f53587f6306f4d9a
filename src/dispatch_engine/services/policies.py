"""Delivery Policies: configuration, lineup edits and their effect on dispatches (R-POL-*)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Conflict, FieldError, InvalidFields, NotFound, ValidationFailed
from dispatch_engine.models import LineupMessage, Policy, PolicyVersion, new_id
from dispatch_engine.rules.business_hours import (
    BusinessHours,
    BusinessHoursError,
    HolidayCalendar,
    window_zone,
)
from dispatch_engine.rules.delays import Delay, due_time
from dispatch_engine.rules.json_diff import json_diff
from dispatch_engine.rules.lineup import delay_problems, validity_problem
from dispatch_engine.schemas.durations import format_delay, parse_delay, parse_duration
from dispatch_engine.schemas.policies import (
    BusinessRules,
    DndWebhooks,
    FatigueRules,
    LineupMessageIn,
    LineupMessageOut,
    PolicyCreate,
    PolicyOut,
    PolicyVersionOut,
    PolicyVersionSummary,
    StepState,
    VersionChange,
    version_snapshot,
)
from dispatch_engine.security.ssrf import UnsafeUrlError, UrlPolicy, validate_url
from dispatch_engine.services.dispatch_pauses import (
    LINEUP_CHANGED,
    POLICY_DELETED,
    VALIDITY_TOO_SHORT,
)
from dispatch_engine.store import policies as store
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.dispatches import dispatches_of_policy, pause_active_dispatches
from dispatch_engine.store.integrations import find_integration
from dispatch_engine.store.paging import Page, PageRequest
from dispatch_engine.store.pauses import release_held_of_policy
from dispatch_engine.store.policy_versions import (
    add_policy_version,
    find_policy_version,
    versions_of_policy,
)

SANDBOX_NAME = "Sandbox"
SectionT = TypeVar("SectionT", FatigueRules, BusinessRules, DndWebhooks)


# --- validation (pure) -------------------------------------------------------------------


def business_hours_of(rules: BusinessRules) -> BusinessHours:
    """The pure window model for stored rules (closed dates and the holiday calendar
    included); raises ValidationFailed on bad rules."""
    try:
        return BusinessHours.from_spec(
            rules.time_zone,
            {day: [(r.start, r.end) for r in ranges] for day, ranges in rules.days.items()},
            closed_dates=rules.closed_dates or (),
            holidays=HolidayCalendar(rules.holidays.country, rules.holidays.subdivision)
            if rules.holidays is not None
            else None,
        )
    except BusinessHoursError as exc:
        raise ValidationFailed(f"business_rules.{exc.field}", exc.reason) from None


def total_of(delays: Sequence[Delay]) -> Delay:
    """The lineup's delays added up: calendar days and exact time kept apart."""
    return sum(delays, Delay())


def validated_dnd(webhooks: DndWebhooks, url_policy: UrlPolicy) -> DndWebhooks:
    cleaned: dict[str, str | None] = {}
    for channel in ("email", "sms"):
        url = getattr(webhooks, channel)
        if url is None:
            cleaned[channel] = None
            continue
        try:
            cleaned[channel] = validate_url(url, url_policy)
        except UnsafeUrlError as exc:
            raise ValidationFailed(f"dnd_webhooks.{channel}", exc.reason) from None
    return DndWebhooks(**cleaned)


def check_delays(delays: Sequence[Delay], field_prefix: str = "lineup") -> None:
    """422 naming each bad step as `lineup.<index>.delay` (0-based, as every other field
    error names list items); the reason counts messages from 1, as people do."""
    problems = delay_problems(delays)
    if problems:
        raise InvalidFields(
            [FieldError(f"{field_prefix}.{p.position - 1}.delay", p.reason) for p in problems]
        )


def _merge(stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch: nested objects merge, other values replace."""
    merged = dict(stored)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_section(model: type[SectionT], name: str, data: Mapping[str, Any]) -> SectionT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: list[FieldError] = []
        details: list[ErrorDetails] = exc.errors()
        for detail in details:
            location: tuple[int | str, ...] = detail["loc"]
            path = ".".join([name] + [str(part) for part in location])
            errors.append(FieldError(path, str(detail["msg"])))
        raise InvalidFields(errors) from None


# --- reads ----------------------------------------------------------------------------------


async def get_policy(
    session: AsyncSession, account_id: str, policy_id: str, *, lock: bool = False
) -> Policy:
    """A live (not deleted) policy of the account; 404 otherwise. Edits pass `lock=True`:
    the row lock makes If-Match checks, position arithmetic and dispatch creation on the
    same policy happen one at a time (SQLite already runs one writer at a time)."""
    policy = await store.find_policy(session, policy_id, lock=lock)
    if policy is None or policy.account_id != account_id or policy.deleted_at is not None:
        raise NotFound(f"policy '{policy_id}'")
    return policy


def checks_for(policy: Policy, message: LineupMessage) -> list[str]:
    """The rules that run before this lineup message goes out, in pipeline order."""
    checks = ["unsubscribe"]
    if message.position == 1:
        fatigue = FatigueRules.model_validate(policy.fatigue)
        if fatigue.pending_token.enabled:
            checks.append("fatigue_pending_token")
        if fatigue.max_invites.enabled:
            checks.append("fatigue_max_invites")
    if parse_duration(BusinessRules.model_validate(policy.business_rules).min_validity_left):
        checks.append("too_late")
    checks.append("business_window")
    if policy.dnd_webhooks.get(message.channel):
        checks.append("dnd")
    return checks


def policy_out(
    policy: Policy, lineup: Sequence[LineupMessage], paused: list[str] | None = None
) -> PolicyOut:
    return PolicyOut(
        id=policy.id,
        account=policy.account_id,
        name=policy.name,
        sandbox=policy.is_sandbox,
        status=policy.status,
        version=policy.version,
        lineup=[
            LineupMessageOut(
                id=m.id,
                position=m.position or 0,
                channel=m.channel,
                delay=format_delay(m.delay),
                delay_seconds=m.delay.nominal_seconds,
                checks=checks_for(policy, m),
            )
            for m in lineup
        ],
        total_delay=format_delay(total_of([m.delay for m in lineup])),
        fatigue=FatigueRules.model_validate({**policy.fatigue, "uuid_field": policy.uuid_field}),
        business_rules=BusinessRules.model_validate(policy.business_rules),
        dnd_webhooks=DndWebhooks.model_validate(policy.dnd_webhooks),
        created_at=policy.created_at,
        updated_at=policy.updated_at,
        paused_dispatches=paused,
    )


def policy_snapshot(policy: Policy, lineup: Sequence[LineupMessage]) -> dict[str, Any]:
    """What the audit log keeps of a policy (JSON-safe)."""
    return policy_out(policy, lineup).model_dump(mode="json", exclude={"paused_dispatches"})


# --- versions -------------------------------------------------------------------------------


def snapshot_of(policy: Policy, lineup: Sequence[LineupMessage]) -> dict[str, Any]:
    """What a version of the policy keeps (schemas.policies.version_snapshot)."""
    return version_snapshot(
        name=policy.name,
        sandbox=policy.is_sandbox,
        status=policy.status,
        deleted=policy.deleted_at is not None,
        uuid_field=policy.uuid_field,
        fatigue=policy.fatigue,
        business_rules=policy.business_rules,
        dnd_webhooks=policy.dnd_webhooks,
        lineup=[StepState(m.id, m.position or 0, m.channel, m.delay) for m in lineup],
    )


def record_version(
    session: AsyncSession,
    policy: Policy,
    lineup: Sequence[LineupMessage],
    change: str,
    key_id: str | None,
    now: datetime,
) -> None:
    """Keep the policy as it is now as version `policy.version`, in the change's own
    transaction. Every change of a policy bumps `version` (`_touch`) and ends here: the
    routes call it with the audit record (api/routes/policies.py `_record`), account
    creation for its sandbox's version 1."""
    add_policy_version(
        session,
        policy_id=policy.id,
        number=policy.version,
        created_at=now,
        key_id=key_id,
        change=change,
        snapshot=snapshot_of(policy, lineup),
    )


def version_summary(version: PolicyVersion) -> PolicyVersionSummary:
    return PolicyVersionSummary(
        number=version.number,
        created_at=version.created_at,
        key_id=version.key_id,
        change=version.change,
    )


async def list_versions(
    session: AsyncSession, account_id: str, policy_id: str, page: PageRequest
) -> Page:
    """A page of a live policy's versions, newest first; 404 for another account's."""
    policy = await get_policy(session, account_id, policy_id)
    return await versions_of_policy(session, policy.id, page)


async def get_version(
    session: AsyncSession, account_id: str, policy_id: str, number: int
) -> PolicyVersionOut:
    """Version `number` of a live policy with what changed since version `number - 1`."""
    policy = await get_policy(session, account_id, policy_id)
    version = await find_policy_version(session, policy.id, number)
    if version is None:
        raise NotFound(f"version {number} of policy '{policy_id}'")
    previous = await find_policy_version(session, policy.id, number - 1) if number > 1 else None
    diff = (
        None
        if previous is None
        else [
            VersionChange(**asdict(change))
            for change in json_diff(previous.snapshot, version.snapshot)
        ]
    )
    return PolicyVersionOut(
        **version_summary(version).model_dump(), snapshot=version.snapshot, diff=diff
    )


# --- writes ---------------------------------------------------------------------------------


def _fatigue_dict(fatigue: FatigueRules) -> dict[str, Any]:
    return fatigue.model_dump(mode="json", exclude={"uuid_field"})


async def _require_unique_name(
    session: AsyncSession, account_id: str, name: str, except_id: str | None = None
) -> None:
    if await store.count_live_policies_named(session, account_id, name.casefold(), except_id):
        raise Conflict(
            f"a policy named '{name}' already exists in this account (names are case-insensitive)",
            slug="policy-name-taken",
            field_name="name",
        )


def new_sandbox_policy(account_id: str, now: datetime) -> Policy:
    """Every account's sandbox: created with the account, listed first, never deleted."""
    return Policy(
        id=new_id("pol"),
        account_id=account_id,
        name=SANDBOX_NAME,
        name_key=SANDBOX_NAME.casefold(),
        is_sandbox=True,
        status="active",
        uuid_field="email",
        fatigue=_fatigue_dict(FatigueRules()),
        business_rules=BusinessRules().model_dump(mode="json"),
        dnd_webhooks=DndWebhooks().model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )


async def create_policy(
    session: AsyncSession,
    account_id: str,
    body: PolicyCreate,
    url_policy: UrlPolicy,
    now: datetime,
) -> tuple[Policy, list[LineupMessage]]:
    await get_account(session, account_id)
    if await find_integration(session, account_id) is None:
        raise Conflict(
            "this account has no queue integration yet; set one with "
            f"PUT /v1/accounts/{account_id}/queue-integration before creating policies",
            slug="queue-integration-required",
        )
    delays = [parse_delay(m.delay) for m in body.lineup]
    check_delays(delays)
    business_hours_of(body.business_rules)
    dnd = validated_dnd(body.dnd_webhooks, url_policy)
    await _require_unique_name(session, account_id, body.name)
    policy = Policy(
        id=new_id("pol"),
        account_id=account_id,
        name=body.name,
        name_key=body.name.casefold(),
        is_sandbox=False,
        status="active",
        uuid_field=body.fatigue.uuid_field,
        fatigue=_fatigue_dict(body.fatigue),
        business_rules=body.business_rules.model_dump(mode="json"),
        dnd_webhooks=dnd.model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    session.add(policy)
    await session.flush()  # the lineup rows reference it
    lineup = _new_lineup(policy.id, body.lineup, delays, now)
    session.add_all(lineup)
    await session.flush()
    return policy, lineup


def _new_lineup(
    policy_id: str, messages: Sequence[LineupMessageIn], delays: Sequence[Delay], now: datetime
) -> list[LineupMessage]:
    return [
        LineupMessage(
            id=new_id("msg"),
            policy_id=policy_id,
            position=index,
            channel=message.channel,
            delay_days=delay.days,
            delay_seconds=delay.seconds,
            created_at=now,
        )
        for index, (message, delay) in enumerate(zip(messages, delays, strict=True), start=1)
    ]


def _touch(policy: Policy, now: datetime) -> None:
    policy.version += 1
    policy.updated_at = now


async def patch_policy(
    session: AsyncSession,
    policy: Policy,
    patch: Mapping[str, Any],
    url_policy: UrlPolicy,
    now: datetime,
) -> None:
    """Rename, and merge-edit fatigue, business rules and DND webhooks (all take effect at once).

    A new UUID field starts a new fatigue epoch: earlier sends stop counting for this policy.
    """
    if patch.get("name") is not None and patch["name"] != policy.name:
        await _require_unique_name(session, policy.account_id, patch["name"], policy.id)
        policy.name = patch["name"]
        policy.name_key = patch["name"].casefold()
    if patch.get("fatigue") is not None:
        current = {**policy.fatigue, "uuid_field": policy.uuid_field}
        fatigue = _parse_section(FatigueRules, "fatigue", _merge(current, patch["fatigue"]))
        if fatigue.uuid_field != policy.uuid_field:
            policy.uuid_field = fatigue.uuid_field
            policy.fatigue_epoch += 1
        policy.fatigue = _fatigue_dict(fatigue)
    if patch.get("business_rules") is not None:
        merged = dict(policy.business_rules)
        for key, value in patch["business_rules"].items():
            merged[key] = value  # `days` replaces whole: a missing day means closed
        rules = _parse_section(BusinessRules, "business_rules", merged)
        business_hours_of(rules)
        if rules.model_dump(mode="json") != policy.business_rules:
            policy.business_rules = rules.model_dump(mode="json")
            # the trace names the version this edit makes (`_touch` below bumps it)
            await store.redo_business_deferrals(
                session, policy.id, now, policy_version=policy.version + 1
            )
    if patch.get("dnd_webhooks") is not None:
        dnd = _parse_section(
            DndWebhooks, "dnd_webhooks", _merge(policy.dnd_webhooks, patch["dnd_webhooks"])
        )
        policy.dnd_webhooks = validated_dnd(dnd, url_policy).model_dump(mode="json")
    _touch(policy, now)


async def delete_policy(session: AsyncSession, policy: Policy, now: datetime) -> list[str]:
    """Soft delete (kept for history); its dispatches pause until moved to another policy."""
    if policy.is_sandbox:
        raise Conflict("the sandbox policy cannot be deleted", slug="sandbox-not-deletable")
    policy.deleted_at = now
    _touch(policy, now)
    return await pause_active_dispatches(session, policy.id, POLICY_DELETED, now)


async def set_policy_status(
    session: AsyncSession, policy: Policy, status: str, now: datetime
) -> None:
    """Pause holds every message of the policy's dispatches; resume lets them go, subject to
    the rules at that time."""
    if policy.status != status:
        policy.status = status
        _touch(policy, now)
        if status == "active":
            await session.flush()
            await release_held_of_policy(session, now, policy.id)


async def _pause_for_short_validity(
    session: AsyncSession, policy_id: str, delays: Sequence[Delay], now: datetime
) -> list[str]:
    """Dispatches whose token validity no longer outlasts the lineup are paused (R-DSP-2)."""
    too_short = [
        d.id
        for d in await dispatches_of_policy(session, policy_id)
        if d.status == "active" and validity_problem(d.token_validity_seconds, delays)
    ]
    if not too_short:
        return []
    return await pause_active_dispatches(
        session, policy_id, VALIDITY_TOO_SHORT, now, only_ids=too_short
    )


async def insert_lineup_message(
    session: AsyncSession,
    policy: Policy,
    channel: str,
    delay: Delay,
    position: int | None,
    now: datetime,
) -> tuple[LineupMessage, list[str]]:
    """Insert a step; every active dispatch of the policy pauses (`lineup_changed`) until it
    has a message template for the new step."""
    lineup = await store.live_lineup(session, policy.id)
    if position is not None and position > len(lineup) + 1:
        raise ValidationFailed(
            "position", f"must be between 1 and {len(lineup) + 1} (leave it out to append)"
        )
    if position is None:
        position = len(lineup) + 1
    delays = [m.delay for m in lineup]
    delays.insert(position - 1, delay)
    check_delays(delays)
    await store.shift_positions(session, policy.id, position, 1)
    message = LineupMessage(
        id=new_id("msg"),
        policy_id=policy.id,
        position=position,
        channel=channel,
        delay_days=delay.days,
        delay_seconds=delay.seconds,
        created_at=now,
    )
    session.add(message)
    _touch(policy, now)
    paused = await pause_active_dispatches(session, policy.id, LINEUP_CHANGED, now)
    await session.flush()
    return message, paused


async def get_lineup_message(
    session: AsyncSession, policy: Policy, message_id: str
) -> LineupMessage:
    message = await store.find_lineup_message(session, message_id)
    if message is None or message.policy_id != policy.id or message.deleted_at is not None:
        raise NotFound(f"lineup message '{message_id}'")
    return message


async def edit_lineup_message(
    session: AsyncSession,
    policy: Policy,
    message: LineupMessage,
    channel: str | None,
    delay: Delay | None,
    now: datetime,
) -> list[str]:
    """Edit channel or delay; delays take effect at once for messages not yet sent."""
    lineup = await store.live_lineup(session, policy.id)
    delays = [delay if m.id == message.id and delay is not None else m.delay for m in lineup]
    check_delays(delays)
    if channel is not None and channel != message.channel:
        message.channel = channel
        await store.change_step_channel(session, message.id, channel)
    if delay is not None and delay != message.delay:
        await store.retime_step(  # traced under the version this edit makes (`_touch`)
            session,
            message.id,
            _due_times(policy, delay),
            now=now,
            policy_version=policy.version + 1,
        )
        message.delay = delay
    _touch(policy, now)
    return await _pause_for_short_validity(session, policy.id, delays, now)


def _due_times(policy: Policy, delay: Delay) -> store.DueTimeOf:
    """A waiting message's due time under the new delay: from the moment its delay counts
    from, in the zone its window is read in (the contact's when the policy says so)."""
    rules = BusinessRules.model_validate(policy.business_rules)
    hours = business_hours_of(rules)

    def due_of(counts_from: datetime, contact_zone: str | None) -> datetime:
        zone = window_zone(hours, contact_zone if rules.use_contact_time_zone else None)
        return due_time(counts_from, delay, zone)

    return due_of


async def delete_lineup_message(
    session: AsyncSession, policy: Policy, message: LineupMessage, now: datetime
) -> None:
    """Destructive: invites skip this step from now on and move on to the next one."""
    lineup = await store.live_lineup(session, policy.id)
    delays = [m.delay for m in lineup if m.id != message.id]
    check_delays(delays)
    position = message.position or 0
    message.deleted_at = now
    message.position = None
    await session.flush()
    await store.skip_deleted_step(session, message.id, now)
    await store.shift_positions(session, policy.id, position + 1, -1)
    _touch(policy, now)


async def copy_to_sandbox(
    session: AsyncSession, source: Policy, now: datetime
) -> tuple[Policy, list[str]]:
    """Copy lineup, fatigue, business and DND settings onto the account's sandbox policy."""
    if source.is_sandbox:
        raise Conflict("this policy is the sandbox already", slug="already-sandbox")
    sandbox = await store.lock_sandbox_policy(session, source.account_id)
    for old in await store.live_lineup(session, sandbox.id):
        old.deleted_at = now
        old.position = None
    source_lineup = await store.live_lineup(session, source.id)
    session.add_all(
        LineupMessage(
            id=new_id("msg"),
            policy_id=sandbox.id,
            position=m.position,
            channel=m.channel,
            delay_days=m.delay_days,
            delay_seconds=m.delay_seconds,
            created_at=now,
        )
        for m in source_lineup
    )
    if sandbox.uuid_field != source.uuid_field:
        sandbox.uuid_field = source.uuid_field
        sandbox.fatigue_epoch += 1
    sandbox.fatigue = dict(source.fatigue)
    sandbox.business_rules = dict(source.business_rules)
    sandbox.dnd_webhooks = dict(source.dnd_webhooks)
    _touch(sandbox, now)
    paused = (
        await pause_active_dispatches(session, sandbox.id, LINEUP_CHANGED, now)
        if source_lineup
        else []
    )
    await session.flush()
    return sandbox, paused
