"""`POST …/policies/{policy}/preview` (R-RUL-3): when each lineup message would go out."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter

from dispatch_engine.api.deps import ReadActor, SessionDep
from dispatch_engine.api.openapi import BODY, doc, problems
from dispatch_engine.errors import ValidationFailed
from dispatch_engine.rules.delays import Delay
from dispatch_engine.rules.zones import contact_zone, window_zone
from dispatch_engine.schemas.durations import format_delay, parse_delay, parse_duration
from dispatch_engine.schemas.policies import BusinessRules
from dispatch_engine.schemas.preview import (
    PreviewClosedDay,
    PreviewIn,
    PreviewMessage,
    PreviewOut,
    PreviewWindow,
)
from dispatch_engine.security.normalize import InvalidAddress, normalize_phone
from dispatch_engine.security.phone_zones import phone_time_zone
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
        evaluates windows in the contact's zone; without it, `mobile` gives the one zone of
        its country, as at ingest; `time_zone` and `time_zone_source` in the answer say
        which zone was used. With `token_validity` (a dispatch's), a message that would go
        out with less than the policy's `min_validity_left` of it left is shown
        `suppressed` (`too_late`) and ends the list, as it ends the invite. Every time is
        given with the UTC offset of the window's zone at that instant (so a time after a
        DST change shows the new offset). Any key that can see the account.
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
    phone_zone = None
    if body.mobile is not None:
        try:
            phone_zone = phone_time_zone(normalize_phone(body.mobile))
        except InvalidAddress as exc:
            raise ValidationFailed("mobile", exc.reason) from None
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
    zone, source = window_zone(
        rules.time_zone, rules.use_contact_time_zone, *contact_zone(body.time_zone, phone_zone)
    )
    local = ZoneInfo(zone)

    def shown(moment: datetime) -> datetime:
        """In the window's zone, with its offset at that instant (not the posting's)."""
        return moment.astimezone(local)

    validity = body.token_validity
    walk = preview_lineup(
        body.posted_at,
        steps,
        hours,
        zone if source != "policy" else None,
        valid_until=body.posted_at + timedelta(seconds=parse_duration(validity))
        if validity
        else None,
        min_validity_left=timedelta(seconds=parse_duration(rules.min_validity_left)),
    )
    return PreviewOut(
        policy=policy.id,
        proposed=body.policy is not None,
        posted_at=shown(body.posted_at),
        time_zone=zone,
        time_zone_source=source,
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
                suppressed=step.suppressed,
            )
            for step in walk
        ],
    )
