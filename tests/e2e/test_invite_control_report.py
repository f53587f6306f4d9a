"""Listing a dispatch's invites (issue 20 §2): by dispatch alone, by state, reason, batch and
time, a page at a time; and the "who was not sent and why" CSV report, streamed, with no
address and no token in it."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ANN,
    BOB,
    CAT,
    DAN,
    EMAIL,
    OFFICE_UTC,
    Api,
    assert_problem,
    contact,
    tick,
)


async def _scenario(api: Api, worker: Worker, clock: FrozenClock, backend: dict[str, str]):  # type: ignore[no-untyped-def]
    policy = await api.policy(
        "Report",
        [EMAIL, {"channel": "sms", "delay": "PT1H"}],
        business_rules={**OFFICE_UTC, "use_contact_time_zone": True},
    )
    dispatch = await api.dispatch(policy)
    other = await api.dispatch(policy, "q2")
    response = await api.event(
        {"type": "unsubscribe", "channel": "email", "address": BOB["email"]}, backend
    )
    assert response.status_code == 200, response.text
    await api.post(
        dispatch,
        contact(ANN, "ann"),
        contact({"email": ANN["email"], "mobile": "+14155550199"}, "ann-again"),  # rule 1
        contact(BOB, "bob"),  # unsubscribed from email
    )
    clock.advance(timedelta(minutes=5))
    await api.post(dispatch, contact(DAN, "dan", time_zone="Asia/Tokyo"))  # deferred
    await api.post(other, contact(CAT, "cat"))
    await tick(worker)
    return dispatch, other


async def _listed(api: Api, **params: str) -> list[dict]:  # type: ignore[type-arg]
    response = await api.client.get(f"{api.base}/invites", headers=api.headers, params=params)
    assert response.status_code == 200, response.text
    invites = response.json()
    assert [i["id"] for i in invites] == sorted(i["id"] for i in invites)  # id order
    return invites  # type: ignore[no-any-return]


async def _ids(api: Api, **params: str) -> list[str]:
    """External ids of the matching invites (sorted: within one upload, id order is not the
    file's row order)."""
    return sorted(i["external_id"] for i in await _listed(api, **params))


async def test_a_dispatchs_invites_list_by_dispatch_state_reason_batch_and_time(
    api: Api, worker: Worker, clock: FrozenClock, backend: dict[str, str]
) -> None:
    started = clock.now()
    dispatch, other = await _scenario(api, worker, clock, backend)
    d = dispatch["id"]
    assert await _ids(api, dispatch=d) == ["ann", "ann-again", "bob", "dan"]
    assert await _ids(api, dispatch=other["id"]) == ["cat"]
    assert await _ids(api) == ["ann", "ann-again", "bob", "cat", "dan"]
    assert await _ids(api, dispatch=d, reason="unsubscribed") == ["bob"]
    assert await _ids(api, dispatch=d, reason="fatigue_pending_token") == ["ann-again"]
    assert await _ids(api, dispatch=d, reason="deferred_business_hours") == ["dan"]
    assert await _ids(api, dispatch=d, state="ended") == ["ann-again"]
    assert await _ids(api, dispatch=d, state="active") == ["ann", "bob", "dan"]
    later = (started + timedelta(minutes=1)).isoformat()
    assert await _ids(api, dispatch=d, since=later) == ["dan"]
    assert await _ids(api, dispatch=d, until=later) == ["ann", "ann-again", "bob"]
    dan = (await api.invite(dispatch, "dan"))["batch"]
    assert await _ids(api, batch=dan) == ["dan"]
    # a page at a time, in the same order: uploads in order (Dan's file came later)
    whole = [i["id"] for i in await _listed(api, dispatch=d)]
    first = await api.client.get(
        f"{api.base}/invites", headers=api.headers, params={"dispatch": d, "limit": 3}
    )
    rest = await api.client.get(
        f"{api.base}/invites",
        headers=api.headers,
        params={"dispatch": d, "limit": 3, "cursor": first.headers["x-next-cursor"]},
    )
    assert [i["id"] for i in first.json() + rest.json()] == whole
    assert [i["external_id"] for i in rest.json()] == ["dan"]
    assert "link" not in rest.headers
    # bad filters are named
    for params, field in (
        ({"state": "gone"}, "state"),
        ({"since": "2026-03-02T10:00:00"}, "since"),  # naive time
        ({"dispatch": "dsp_nope"}, None),
    ):
        response = await api.client.get(f"{api.base}/invites", headers=api.headers, params=params)
        if field is None:
            assert response.status_code == 404, response.text
        else:
            assert_problem(response, 422, "validation-error", field=field)


async def test_the_dispatch_report_is_streamed_csv_of_every_message_with_its_reason(
    api: Api, worker: Worker, clock: FrozenClock, backend: dict[str, str]
) -> None:
    dispatch, _ = await _scenario(api, worker, clock, backend)
    path = f"{api.base}/invites"
    response = await api.client.get(
        path, headers={**api.headers, "Accept": "text/csv"}, params={"dispatch": dispatch["id"]}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    seen = {(r["external_id"], r["channel"], r["message_state"], r["reason"]) for r in rows}
    assert ("ann", "email", "sent", "") in seen
    assert ("ann-again", "email", "suppressed", "fatigue_pending_token") in seen
    assert ("bob", "email", "suppressed", "unsubscribed") in seen
    assert ("dan", "email", "deferred", "deferred_business_hours") in seen
    assert {r["external_id"] for r in rows} == {"ann", "ann-again", "bob", "dan"}
    assert all(r["dispatch"] == dispatch["id"] for r in rows)
    # nobody's address and no survey token is in the report
    ann = await api.invite(dispatch, "ann")
    for secret in (ANN["email"], ANN["mobile"], BOB["email"], ann["token"]):
        assert secret not in response.text
    # filters apply to the report too; format=csv does what Accept does
    only_bob = await api.client.get(
        path,
        headers=api.headers,
        params={"dispatch": dispatch["id"], "reason": "unsubscribed", "format": "csv"},
    )
    assert {r["external_id"] for r in csv.DictReader(io.StringIO(only_bob.text))} == {"bob"}
    # the report is of one dispatch
    response = await api.client.get(path, headers={**api.headers, "Accept": "text/csv"})
    assert_problem(response, 422, "validation-error", field="dispatch")
