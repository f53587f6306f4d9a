"""The rule pipeline end to end: the business window in the contact's own time zone
(R-POL-4).

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import ANN, BOB, OFFICE_UTC, Api, contact, first, recipients, tick

# --- R-POL-4: contact time zone -----------------------------------------------------------


async def test_business_window_in_the_contacts_own_time_zone(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Local", business_rules={**OFFICE_UTC, "use_contact_time_zone": True})
    dispatch = await api.dispatch(policy)
    await api.post(
        dispatch,
        contact(ANN, "ny", time_zone="America/New_York"),  # 06:00 local
        contact(BOB, "tokyo", time_zone="Asia/Tokyo"),  # 19:00 local
        contact({"email": "utc@example.com"}, "utc"),  # no zone: the policy's (10:00 UTC)
    )
    await tick(worker)
    assert recipients(await api.pull()) == ["utc@example.com"]
    ny = first(await api.invite(dispatch, "ny"))
    tokyo = first(await api.invite(dispatch, "tokyo"))
    assert (ny["reason"], ny["scheduled_for"]) == (
        "deferred_business_hours",
        "2026-03-02T14:00:00Z",
    )
    assert (tokyo["reason"], tokyo["scheduled_for"]) == (
        "deferred_business_hours",
        "2026-03-03T00:00:00Z",
    )
    clock.set(datetime(2026, 3, 2, 13, 59, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    clock.set(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))  # 09:00 in New York
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]
    clock.set(datetime(2026, 3, 2, 23, 59, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    clock.set(datetime(2026, 3, 3, 0, 0, tzinfo=UTC))  # 09:00 Tuesday in Tokyo
    await tick(worker)
    assert recipients(await api.pull()) == ["bob@example.com"]
