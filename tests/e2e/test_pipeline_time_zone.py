"""The rule pipeline end to end: the business window in the contact's own time zone
(R-POL-4): the contact file's, else the one zone of the mobile's country, else the
policy's, and where it came from in the invite lookup and the preview (issue 22, item 5).

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ANN,
    BOB,
    CAT,
    OFFICE_UTC,
    Api,
    contact,
    first,
    is_problem,
    recipients,
    tick,
    utc,
)

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


# --- issue 22, item 5: whose time zone ------------------------------------------------------

TOKYO_MOBILE = "+819012345678"  # Japan: one zone
IDAHO_MOBILE = "+12085550123"  # area code 208: Boise and Los Angeles, so none


async def _zones(api: Api, dispatch: dict[str, Any], *external_ids: str) -> dict[str, Any]:
    """(time_zone, time_zone_source) of each invite, as the list and the lookup say."""
    zones = {}
    for external_id in external_ids:
        listed = await api.invite(dispatch, external_id)
        one = await api.call("GET", f"{api.base}/invites/{listed['id']}")
        assert (one["time_zone"], one["time_zone_source"]) == (
            listed["time_zone"],
            listed["time_zone_source"],
        )
        zones[external_id] = (listed["time_zone"], listed["time_zone_source"])
    return zones


async def test_the_window_follows_the_file_then_the_mobiles_country_then_the_policy(
    api: Api, worker: Worker, clock: FrozenClock
) -> None:
    policy = await api.policy("Local", business_rules={**OFFICE_UTC, "use_contact_time_zone": True})
    dispatch = await api.dispatch(policy)
    await api.post(
        dispatch,
        contact({"email": "jp@example.com", "mobile": TOKYO_MOBILE}, "jp"),  # 19:00 in Tokyo
        contact(ANN, "paris"),  # +33: 11:00 in Paris
        contact(CAT, "uk"),  # a +44 mobile: four zones, so the policy's (10:00 UTC)
        contact({"email": "id@example.com", "mobile": IDAHO_MOBILE}, "idaho"),  # two: policy's
        contact(BOB, "given", time_zone="Asia/Tokyo"),  # the file's zone beats +1 415's
    )
    await tick(worker)
    assert recipients(await api.pull()) == [
        "ann@example.com",
        "cat@example.com",
        "id@example.com",
    ]
    assert await _zones(api, dispatch, "jp", "paris", "uk", "idaho", "given") == {
        "jp": ("Asia/Tokyo", "phone_country"),
        "paris": ("Europe/Paris", "phone_country"),
        "uk": ("UTC", "policy"),
        "idaho": ("UTC", "policy"),
        "given": ("Asia/Tokyo", "contact"),
    }
    for external_id in ("jp", "given"):  # 09:00 Tuesday in Tokyo
        message = first(await api.invite(dispatch, external_id))
        assert (message["reason"], message["scheduled_for"]) == (
            "deferred_business_hours",
            "2026-03-03T00:00:00Z",
        )
    clock.set(datetime(2026, 3, 3, 0, 0, tzinfo=UTC))
    await tick(worker)
    assert recipients(await api.pull()) == ["bob@example.com", "jp@example.com"]


async def test_without_use_contact_time_zone_the_policys_zone_until_it_is_turned_on(
    api: Api, worker: Worker
) -> None:
    policy = await api.policy("Plain", business_rules=OFFICE_UTC)
    dispatch = await api.dispatch(policy)
    await api.post(
        dispatch,
        contact({"email": "jp@example.com", "mobile": TOKYO_MOBILE}, "jp"),
        contact(BOB, "given", time_zone="Asia/Tokyo"),
    )
    assert await _zones(api, dispatch, "jp", "given") == {
        "jp": ("UTC", "policy"),
        "given": ("UTC", "policy"),
    }
    # The contact's side was resolved at ingest: turning the option on shows it at once,
    # and the windows follow.
    await api.patch_policy(policy["id"], {"business_rules": {"use_contact_time_zone": True}})
    assert await _zones(api, dispatch, "jp", "given") == {
        "jp": ("Asia/Tokyo", "phone_country"),
        "given": ("Asia/Tokyo", "contact"),
    }
    await tick(worker)
    assert await api.pull() == []
    assert [first(await api.invite(dispatch, e))["reason"] for e in ("jp", "given")] == [
        "deferred_business_hours"
    ] * 2


async def test_the_preview_says_which_zone_it_used(api: Api) -> None:
    local = await api.policy("Local", business_rules={**OFFICE_UTC, "use_contact_time_zone": True})
    plain = await api.policy("Plain", business_rules=OFFICE_UTC)
    posted = "2026-03-02T10:00:00Z"
    cases = [
        (local, {"mobile": TOKYO_MOBILE}, ("Asia/Tokyo", "phone_country"), "2026-03-03T00:00:00Z"),
        (
            local,
            {"mobile": TOKYO_MOBILE, "time_zone": "Europe/Paris"},
            ("Europe/Paris", "contact"),
            None,
        ),
        (local, {"mobile": IDAHO_MOBILE}, ("UTC", "policy"), None),
        (local, {}, ("UTC", "policy"), None),
        (plain, {"mobile": TOKYO_MOBILE}, ("UTC", "policy"), None),
    ]
    for policy, extra, zone, deferred_to in cases:
        response = await api.preview(policy["id"], {"posted_at": posted, **extra})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["time_zone"], body["time_zone_source"]) == zone, extra
        message = body["messages"][0]
        assert message["window"]["time_zone"] == zone[0]
        assert message["deferred"] is (deferred_to is not None)
        if deferred_to:
            assert utc(message["send_at"]) == utc(deferred_to)
    bad = await api.preview(local["id"], {"posted_at": posted, "mobile": "+33 12"})
    assert is_problem(bad, 422)["field"] == "mobile"
