"""Closed dates and public-holiday calendars of a policy's business rules through the HTTP API
(issue 22, item 4): stored sorted and without repeats, calendars checked against the
`holidays` package with the field named, a year without any opening refused; and calendar-day
delays echoed as given (item 3).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx

from tests.conftest import create_policy
from tests.helpers import POLICIES, assert_problem, fetch, patch

BAVARIA = {"country": "DE", "subdivision": "BY"}


async def test_closed_dates_and_a_holiday_calendar_are_stored(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    rules = {
        "time_zone": "Europe/Berlin",
        "closed_dates": ["2026-12-31", "2026-12-24", "2026-12-31", " 2026-08-14 "],
        "holidays": {"country": "de", "subdivision": "by"},
    }
    policy = await create_policy(client, acme, business_rules=rules)
    stored = policy["business_rules"]
    assert stored["closed_dates"] == ["2026-08-14", "2026-12-24", "2026-12-31"]
    assert stored["holidays"] == BAVARIA
    assert (await fetch(client, acme, policy["id"]))["business_rules"] == stored
    # National holidays only: no subdivision.
    national = await create_policy(
        client, acme, name="National", business_rules={"holidays": {"country": "FR"}}
    )
    assert national["business_rules"]["holidays"] == {"country": "FR"}
    # A policy without them reads as before: no closed_dates or holidays keys (min_validity_left
    # is the too_late rule's, always there).
    plain = await create_policy(client, acme, name="Plain")
    assert set(plain["business_rules"]) == {
        "time_zone",
        "days",
        "use_contact_time_zone",
        "min_validity_left",
    }


async def test_patch_replaces_closed_dates_and_the_calendar_whole(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(
        client, acme, business_rules={"closed_dates": ["2026-12-24"], "holidays": BAVARIA}
    )
    response = await patch(
        client,
        acme,
        policy,
        {"business_rules": {"closed_dates": ["2027-01-02"], "holidays": {"country": "AT"}}},
    )
    assert response.status_code == 200, response.text
    rules = response.json()["business_rules"]
    assert (rules["closed_dates"], rules["holidays"]) == (["2027-01-02"], {"country": "AT"})
    response = await patch(
        client, acme, response.json(), {"business_rules": {"closed_dates": [], "holidays": None}}
    )
    assert response.status_code == 200, response.text
    rules = response.json()["business_rules"]
    assert rules["closed_dates"] == []
    assert "holidays" not in rules


async def test_bad_closed_days_are_refused_naming_the_field(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    year = [str(date(2026, 3, 2) + timedelta(days=n)) for n in range(366)]
    every_day = {d: [{"start": "00:00", "end": "24:00"}] for d in ("mon", "tue", "sat")}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"holidays": {"country": "XX"}}, "business_rules.holidays.country", "in all"),
        ({"holidays": {"country": "Germany"}}, "business_rules.holidays.country", "alpha-2"),
        ({"holidays": {}}, "business_rules.holidays.country", ""),
        (
            {"holidays": {"country": "DE", "subdivision": "XX"}},
            "business_rules.holidays.subdivision",
            "valid: BB, BE, BW, BY",
        ),
        (
            {"holidays": {"country": "US", "subdivision": "Ontario"}},
            "business_rules.holidays.subdivision",
            "in all)",
        ),
        ({"holidays": {"country": "DE", "state": "BY"}}, "business_rules.holidays.state", ""),
        ({"closed_dates": ["2026-1-7"]}, "business_rules.closed_dates.0", "YYYY-MM-DD"),
        ({"closed_dates": ["2026-01-07T00:00:00"]}, "business_rules.closed_dates.0", ""),
        ({"closed_dates": ["2026-02-30"]}, "business_rules.closed_dates.0", ""),
        ({"closed_dates": [20260107]}, "business_rules.closed_dates.0", "YYYY-MM-DD"),
        ({"closed_dates": ["0999-12-31"]}, "business_rules.closed_dates", "1000-8999"),
        ({"closed_dates": "2026-01-07"}, "business_rules.closed_dates", ""),
        (
            {"closed_dates": [str(date(2026, 1, 1) + timedelta(days=n)) for n in range(1001)]},
            "business_rules.closed_dates",
            "",
        ),
        # Monday 2 March on, with the weekend before it (the default week is Mon-Fri).
        ({"closed_dates": year}, "business_rules.closed_dates", "from 2026-02-28"),
        # Weekly closed days join closed weekdays into a stretch without any opening.
        (
            {
                "days": every_day,
                "closed_dates": [d for d in year if date.fromisoformat(d).weekday() in (0, 1, 5)],
            },
            "business_rules.closed_dates",
            "at least once",
        ),
    ]
    for rules, field, reason in cases:
        response = await client.post(
            POLICIES, headers=acme, json={"name": "B", "business_rules": rules}
        )
        body = assert_problem(response, 422, "validation-error", field=field)
        assert reason in body["errors"][0]["reason"], (rules, body)
        response = await patch(client, acme, policy, {"business_rules": rules})
        assert_problem(response, 422, "validation-error", field=field)
    assert await fetch(client, acme, policy["id"]) == policy
    # A year less a day is allowed.
    response = await client.post(
        POLICIES,
        headers=acme,
        json={
            "name": "Long",
            "business_rules": {
                "closed_dates": year[:-1],
                "days": every_day
                | {d: [{"start": "00:00", "end": "24:00"}] for d in ("wed", "thu", "fri", "sun")},
            },
        },
    )
    assert response.status_code == 201, response.text
    assert len(response.json()["business_rules"]["closed_dates"]) == 365


async def test_a_proposed_calendar_in_a_preview_is_checked_too(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    response = await client.post(
        f"{POLICIES}/{policy['id']}/preview",
        headers=acme,
        json={
            "posted_at": "2026-03-06T16:30:00+01:00",
            "policy": {
                "lineup": [{"channel": "email", "delay": "PT0S"}],
                "business_rules": {"holidays": {"country": "ZZ"}},
            },
        },
    )
    assert_problem(
        response, 422, "validation-error", field="policy.business_rules.holidays.country"
    )


async def test_delays_are_echoed_as_given_days_apart_from_hours(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    lineup = [
        {"channel": "email", "delay": "PT0S"},
        {"channel": "email", "delay": "P1D"},
        {"channel": "sms", "delay": "PT24H"},
        {"channel": "email", "delay": "p1dt2h"},
        {"channel": "email", "delay": "P1W"},
    ]
    policy = await create_policy(client, acme, lineup=lineup)
    assert [(m["delay"], m["delay_seconds"]) for m in policy["lineup"]] == [
        ("PT0S", 0),
        ("P1D", 86_400),
        ("PT24H", 86_400),  # the same nominal length, but 24 exact hours
        ("P1DT2H", 93_600),
        ("P7D", 604_800),
    ]
    assert policy["total_delay"] == "P9DT26H"
    assert (await fetch(client, acme, policy["id"]))["lineup"] == policy["lineup"]
