"""Dispatches: create, edit, pause and resume, with the validity rule of R-DSP-2."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import (
    Conflict,
    DomainError,
    FieldError,
    InvalidFields,
    NotFound,
    ValidationFailed,
)
from dispatch_engine.models import Dispatch, LineupMessage, Policy, new_id
from dispatch_engine.rules.delays import Delay
from dispatch_engine.rules.lineup import total_delay, validity_problem
from dispatch_engine.schemas.dispatches import DispatchCreate, DispatchOut
from dispatch_engine.schemas.durations import format_delay, format_duration, parse_duration
from dispatch_engine.services.dispatch_pauses import VALIDITY_TOO_SHORT
from dispatch_engine.store.accounts import get_account
from dispatch_engine.store.dispatches import dispatches_of_account, find_dispatch
from dispatch_engine.store.paging import PageRequest
from dispatch_engine.store.pauses import release_held_of_dispatches
from dispatch_engine.store.policies import find_policy, live_lineup, live_lineups

MANUAL_PAUSE = "manual"


def missing_templates(dispatch: Dispatch, lineup: Sequence[LineupMessage]) -> list[str]:
    return [m.id for m in lineup if not dispatch.message_templates.get(m.id)]


def dispatch_out(dispatch: Dispatch, lineup: Sequence[LineupMessage]) -> DispatchOut:
    return DispatchOut(
        id=dispatch.id,
        account=dispatch.account_id,
        questionnaire_id=dispatch.questionnaire_id,
        policy_id=dispatch.policy_id,
        token_validity=format_duration(dispatch.token_validity_seconds),
        token_validity_seconds=dispatch.token_validity_seconds,
        message_templates=dict(dispatch.message_templates),
        missing_templates=missing_templates(dispatch, lineup),
        status=dispatch.status,
        pause_reason=dispatch.pause_reason,
        paused_at=dispatch.paused_at,
        version=dispatch.version,
        created_at=dispatch.created_at,
        updated_at=dispatch.updated_at,
    )


def dispatch_snapshot(dispatch: Dispatch, lineup: Sequence[LineupMessage]) -> dict[str, Any]:
    return dispatch_out(dispatch, lineup).model_dump(mode="json")


async def get_dispatch(
    session: AsyncSession, account_id: str, dispatch_id: str, *, lock: bool = False
) -> Dispatch:
    dispatch = await find_dispatch(session, dispatch_id, lock=lock)
    if dispatch is None or dispatch.account_id != account_id:
        raise NotFound(f"dispatch '{dispatch_id}'")
    return dispatch


async def list_dispatches(
    session: AsyncSession, account_id: str, page: PageRequest
) -> tuple[list[tuple[Dispatch, list[LineupMessage]]], str | None]:
    """A page of the account's dispatches, each with its policy's live lineup."""
    dispatches, next_cursor = await dispatches_of_account(session, account_id, page)
    lineups = await live_lineups(session, sorted({d.policy_id for d in dispatches}))
    return [(d, lineups[d.policy_id]) for d in dispatches], next_cursor


async def _usable_policy(session: AsyncSession, account_id: str, policy_id: str) -> Policy:
    """The policy a dispatch will use, row-locked so a concurrent lineup edit waits for the
    dispatch to exist (and then pauses it) instead of missing it."""
    policy = await find_policy(session, policy_id, lock=True)
    if policy is None or policy.account_id != account_id:
        raise ValidationFailed("policy_id", "no such policy in this account")
    if policy.deleted_at is not None:
        raise ValidationFailed("policy_id", "this policy was deleted; choose another one")
    return policy


def _template_errors(
    templates: dict[str, Any], lineup: Sequence[LineupMessage]
) -> list[FieldError]:
    live = {m.id for m in lineup}
    errors = [
        FieldError(f"message_templates.{key}", "not a message of this policy's lineup")
        for key in templates
        if key not in live
    ]
    errors += [
        FieldError(
            f"message_templates.{m.id}",
            f"a template is required for lineup message {m.position} ({m.channel})",
        )
        for m in lineup
        if not templates.get(m.id)
    ]
    return errors


def _validity_error(validity: int, lineup: Sequence[LineupMessage]) -> DomainError | None:
    delays = [m.delay for m in lineup]
    problem = validity_problem(validity, delays)
    if problem is None:
        return None
    return DomainError(
        detail=problem,
        errors=[FieldError("token_validity", problem)],
        extra={
            "token_validity_seconds": validity,
            "total_delay_seconds": total_delay(delays),
            "total_delay": format_delay(sum(delays, Delay())),
        },
        status=422,
        slug="token-validity-too-short",
        title="Token validity too short",
    )


def _raise_template_errors(errors: list[FieldError]) -> None:
    if errors:
        raise InvalidFields(errors)


async def create_dispatch(
    session: AsyncSession, account_id: str, body: DispatchCreate, now: datetime
) -> tuple[Dispatch, list[LineupMessage]]:
    await get_account(session, account_id)
    policy = await _usable_policy(session, account_id, body.policy_id)
    lineup = await live_lineup(session, policy.id)
    if not lineup:
        raise ValidationFailed("policy_id", "this policy has no lineup messages to send")
    _raise_template_errors(_template_errors(body.message_templates, lineup))
    validity = parse_duration(body.token_validity)
    error = _validity_error(validity, lineup)
    if error:
        raise error
    dispatch = Dispatch(
        id=new_id("dsp"),
        account_id=account_id,
        policy_id=policy.id,
        questionnaire_id=body.questionnaire_id,
        token_validity_seconds=validity,
        message_templates=dict(body.message_templates),
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(dispatch)
    await session.flush()
    return dispatch, lineup


async def patch_dispatch(
    session: AsyncSession, dispatch: Dispatch, patch: dict[str, Any], now: datetime
) -> list[LineupMessage]:
    """Move to another policy, change validity or templates. An active dispatch must stay
    runnable after the change; a paused one may be completed step by step. The version
    (ETag) moves only when something changed."""
    original = (
        dispatch.policy_id,
        dispatch.token_validity_seconds,
        dict(dispatch.message_templates),
    )
    if patch.get("policy_id") is not None:
        dispatch.policy_id = (
            await _usable_policy(session, dispatch.account_id, patch["policy_id"])
        ).id
    if patch.get("token_validity") is not None:
        dispatch.token_validity_seconds = parse_duration(patch["token_validity"])
    if patch.get("message_templates") is not None:
        templates = dict(dispatch.message_templates)
        for key, value in patch["message_templates"].items():
            if value is None:
                templates.pop(key, None)
            else:
                templates[key] = value
        dispatch.message_templates = templates
    lineup = await live_lineup(session, dispatch.policy_id)
    live_ids = {m.id for m in lineup}
    if patch.get("message_templates") is not None:
        _raise_template_errors(
            [
                FieldError(f"message_templates.{key}", "not a message of this policy's lineup")
                for key, value in patch["message_templates"].items()
                if value is not None and key not in live_ids
            ]
        )
    if dispatch.status == "active":
        required = _template_errors(dispatch.message_templates, lineup)
        _raise_template_errors([e for e in required if "required" in e.reason])
        error = _validity_error(dispatch.token_validity_seconds, lineup)
        if error:
            raise error
    if original != (
        dispatch.policy_id,
        dispatch.token_validity_seconds,
        dispatch.message_templates,
    ):
        dispatch.version += 1
        dispatch.updated_at = now
    if (
        patch.get("token_validity") is not None
        and dispatch.status == "paused"
        and dispatch.pause_reason == VALIDITY_TOO_SHORT
        and _validity_error(dispatch.token_validity_seconds, lineup) is None
        and not missing_templates(dispatch, lineup)
    ):
        # The engine paused it because a lineup edit outgrew its validity: a long enough
        # validity removes the cause, so it runs again (docs/decisions.md).
        await resume_dispatch(session, dispatch, now)
    return lineup


def pause_dispatch(dispatch: Dispatch, reason: str | None, now: datetime) -> None:
    if dispatch.status == "paused" and reason is None:
        return
    dispatch.status = "paused"
    dispatch.pause_reason = reason or MANUAL_PAUSE
    dispatch.paused_at = now
    dispatch.version += 1
    dispatch.updated_at = now


async def resume_dispatch(
    session: AsyncSession, dispatch: Dispatch, now: datetime
) -> list[LineupMessage]:
    """Re-enable only when runnable: live policy, a template per lineup message, validity."""
    policy = await find_policy(session, dispatch.policy_id, lock=True)
    if policy is None or policy.deleted_at is not None:
        raise Conflict(
            "the dispatch's policy was deleted; move it to another policy (PATCH policy_id) "
            "before resuming",
            slug="dispatch-not-resumable",
            field_name="policy_id",
        )
    lineup = await live_lineup(session, dispatch.policy_id)
    missing = missing_templates(dispatch, lineup)
    if missing:
        raise Conflict(
            "the dispatch needs a message template for every lineup message before it can "
            f"resume; missing: {', '.join(missing)}",
            slug="dispatch-not-resumable",
            field_name="message_templates",
            missing_templates=missing,
        )
    error = _validity_error(dispatch.token_validity_seconds, lineup)
    if error:
        error.status = 409
        error.slug = "dispatch-not-resumable"
        raise error
    if dispatch.status != "active":
        dispatch.status = "active"
        dispatch.pause_reason = None
        dispatch.paused_at = None
        dispatch.version += 1
        dispatch.updated_at = now
        await session.flush()
        await release_held_of_dispatches(session, now, [dispatch.id])
    return lineup
