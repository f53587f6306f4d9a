"""Impacted sendings (R-INC-4): the incident's time range, filters, grouping by account,
cursor pages, and streamed CSV that a spreadsheet opens safely."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest

from dispatch_engine.api.content_type import prefers_csv
from dispatch_engine.clock import FrozenClock
from dispatch_engine.incidents import impacted
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import T0
from tests.helpers import tick
from tests.incidents.conftest import Desk, failed_sendings

MIN = timedelta(minutes=1)


async def _page(desk: Desk, incident: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await desk.call(
        "GET", f"/v1/incidents/{incident['id']}/impacted-sendings", params=params
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def _ids(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(g["account"], s["sending"]) for g in page["accounts"] for s in g["sendings"]]


async def test_impacted_sendings_json_and_csv(
    desk: Desk, worker: Worker, clock: FrozenClock
) -> None:
    await desk.setup("acme")
    await desk.setup("beta")
    renamed = await desk.client.patch(
        "/v1/accounts/beta", headers=desk.admin, json={"name": '=HYPERLINK("http://x","y")'}
    )
    assert renamed.status_code == 200, renamed.text
    await desk.queue("unreachable", "acme")
    await desk.queue("unreachable", "beta")
    (early,) = await failed_sendings(desk, worker, "early@example.com")  # before the incident
    clock.advance(MIN)
    incident = await desk.incident(title="Relay outage", severity="P2")
    clock.advance(MIN)
    pair = await failed_sendings(desk, worker, "a1@example.com", "a2@example.com")
    a1, a2 = sorted(pair, key=lambda m: str(m["id"]))  # same scheduled time: by id
    clock.advance(MIN)
    (b1,) = await failed_sendings(desk, worker, "b1@example.com", account="beta")
    await desk.queue("local", "acme")
    await desk.post_contacts("fine@example.com")  # sent: not impacted
    await tick(worker)

    page = await _page(desk, incident)
    assert _ids(page) == [("acme", a1["id"]), ("acme", a2["id"]), ("beta", b1["id"])]
    assert early["id"] not in str(page)
    assert page["range_start"] == "2026-03-02T09:01:00Z"
    assert page["range_end"] == "2026-03-02T09:03:00Z"  # now: not resolved
    first = page["accounts"][0]
    assert (first["account"], first["account_name"]) == ("acme", "Acme")
    sending = first["sendings"][0]
    assert sending["state"] == "failed" and sending["channel"] == "email"
    assert sending["scheduled_at"] == "2026-03-02T09:02:00Z"
    assert sending["dispatch"] == desk.dispatches["acme"]
    assert sending["reason"]  # the queue's error, in plain words
    assert sending["resent_as"] == []

    assert _ids(await _page(desk, incident, account="beta")) == [("beta", b1["id"])]
    assert _ids(await _page(desk, incident, channel="sms")) == []
    one = await _page(desk, incident, limit=2)
    assert _ids(one) == [("acme", a1["id"]), ("acme", a2["id"])]
    two = await _page(desk, incident, limit=2, cursor=one["next_cursor"])
    assert (_ids(two), two["next_cursor"]) == ([("beta", b1["id"])], None)

    response = await desk.call(
        "GET",
        f"/v1/incidents/{incident['id']}/impacted-sendings",
        headers={**desk.ops, "Accept": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "account",
        "account_name",
        "sending",
        "dispatch",
        "channel",
        "state",
        "reason",
        "scheduled_at",
        "invite",
        "resend_of",
        "resent_as",
    ]
    assert [(r[0], r[2], r[5], r[7]) for r in rows[1:]] == [
        ("acme", a1["id"], "failed", "2026-03-02T09:02:00Z"),
        ("acme", a2["id"], "failed", "2026-03-02T09:02:00Z"),
        ("beta", b1["id"], "failed", "2026-03-02T09:03:00Z"),
    ]
    assert rows[3][1] == '\'=HYPERLINK("http://x","y")'  # never a live formula
    as_param = await desk.call(
        "GET", f"/v1/incidents/{incident['id']}/impacted-sendings", params={"format": "csv"}
    )
    assert as_param.text == response.text

    await desk.move(incident, "acknowledged", "investigating", "identified", "resolved")
    clock.advance(MIN)
    (after,) = await failed_sendings(desk, worker, "after@example.com", account="beta")
    closed_range = await _page(desk, incident)
    assert closed_range["range_end"] == "2026-03-02T09:03:00Z"  # the resolution
    assert after["id"] not in str(closed_range)


async def test_csv_streams_page_after_page(
    desk: Desk, worker: Worker, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(impacted, "CSV_PAGE", 3)
    await desk.setup()
    incident = await desk.incident(started_at=(T0 - MIN).isoformat())
    await desk.queue("unreachable")
    emails = [f"p{i:04d}@example.com" for i in range(10)]
    await desk.post_contacts(*emails)
    await tick(worker)
    response = await desk.call(
        "GET",
        f"/v1/incidents/{incident['id']}/impacted-sendings",
        headers={**desk.ops, "Accept": "text/csv"},
    )
    rows = list(csv.reader(io.StringIO(response.text)))
    assert len(rows) == 1 + 10
    assert len({r[2] for r in rows[1:]}) == 10
    assert {r[5] for r in rows[1:]} == {"failed"}


@pytest.mark.parametrize(
    ("accept", "wants_csv"),
    [
        ("text/csv", True),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/json, text/csv;q=0.5", False),  # JSON preferred
        ("text/csv;q=0.9, application/json;q=0.5", True),
        ("text/csv, application/json", True),  # as high, listed first
        ("application/json, text/csv", False),
        ("text/csv;q=0", False),  # "not acceptable"
        ("application/*;q=0.2, text/csv;q=0.3", True),
    ],
)
def test_csv_only_when_the_client_prefers_it(accept: str, wants_csv: bool) -> None:
    assert prefers_csv(accept) is wants_csv
