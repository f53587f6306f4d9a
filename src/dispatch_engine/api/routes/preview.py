"""`POST …/policies/{policy}/preview` (R-RUL-3): when each lineup message would go out."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter

from dispatch_engine.api.deps import ReadActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.errors import ValidationFailed
from dispatch_engine.rules.business_hours import window_zone
from dispatch_engine.rules.delays import Delay
from dispatch_engine.schemas.durations import format_delay, parse_delay
from dispatch_engine.schemas.policies import BusinessRules
from dispatch_engine.schemas.preview import (
    PreviewClosedDay,
    PreviewIn,
    PreviewMessage,
    PreviewOut,
    PreviewWindow,
)
from dispatch_engine.services import policies as service
from dispatch_engine.services.preview import preview_lineup
from dispatch_engine.store.policies import live_lineup

router = APIRouter(prefix="/v1/accounts/{account_id}/policies", tags=["policies"])


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@router.post(
    "/{policy_id}/preview",
    response_model=PreviewOut,
    summary="Preview when messages would go out",
    description=doc(
        """
        Answers, without sending or storing anything, when each lineup message of a contact
        posted at `posted_at` would go out and why: its due time by the delays (days are
        calendar days in the window's zone, hours exact), its send time after the business
        window (`deferred`, reason `deferred_business_hours`), the window it falls in and
        the closed dates or holidays it had to skip (`closed_days`). For the policy as
        saved, or for proposed settings in `policy` (lineup and business rules), so EM can
        show the effect before saving. `time_zone` is the contact's, used when the policy
        evaluates windows in the contact's zone. Every time is given with the UTC offset of
        the window's zone at that instant (so a time after a DST change shows the new
        offset). Any key that can see the account.
        """
    ),
    responses=problems(401, 404, *BODY),
)
async def preview_policy(
    account_id: str, policy_id: str, body: PreviewIn, actor: ReadActor, session: SessionDep
) -> PreviewOut:
    """When each lineup message of a contact posted at `posted_at` would go out, and why —
    for the saved policy or proposed settings. Uses the pipeline's rules; writes nothing."""
    if body.time_zone is not None and not _valid_zone(body.time_zone):
        raise ValidationFailed("time_zone", "not an IANA time zone")
    async with session.begin():
        policy = await service.get_policy(session, account_id, policy_id)
        saved = await live_lineup(session, policy.id)
    ids: list[str | None]
    steps: list[tuple[str, Delay]]
    if body.policy is not None:
        steps = [(m.channel, parse_delay(m.delay)) for m in body.policy.lineup]
        service.check_delays([delay for _, delay in steps], "policy.lineup")
        rules = body.policy.business_rules
        ids = [None] * len(steps)
    else:
        steps = [(m.channel, m.delay) for m in saved]
        rules = BusinessRules.model_validate(policy.business_rules)
        ids = [m.id for m in saved]
    hours = service.business_hours_of(rules)
    zone = body.time_zone if rules.use_contact_time_zone else None
    local = ZoneInfo(window_zone(hours, zone))

    def shown(moment: datetime) -> datetime:
        """In the window's zone, with its offset at that instant (not the posting's)."""
        return moment.astimezone(local)

    return PreviewOut(
        policy=policy.id,
        proposed=body.policy is not None,
        posted_at=shown(body.posted_at),
        messages=[
            PreviewMessage(
                position=step.position,
                lineup_message_id=ids[step.position - 1],
                channel=step.channel,
                delay=format_delay(step.delay),
                due_at=shown(step.due_at),
                send_at=shown(step.send_at),
                deferred=step.deferred,
                reason=step.reason,
                window=PreviewWindow(
                    start=shown(step.window_start),
                    end=shown(step.window_end),
                    time_zone=step.window_zone,
                ),
                closed_days=[
                    PreviewClosedDay(date=closed.day, reason=closed.reason, name=closed.name)
                    for closed in step.closed_days
                ],
            )
            for step in preview_lineup(body.posted_at, steps, hours, zone)
        ],
    )
