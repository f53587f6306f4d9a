"""Fatigue rule 1 at upload (R-INV-2): two rows of one person give two invites and one
pending-token lock, which follows the policy's UUID field (a mobile normalised first),
is not taken without the rule, and passes from an expired holder to the next file.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Invite
from tests.helpers import counts, invite_rows, make_dispatch, post_csv, post_json

# --- fatigue rule 1 (R-INV-2) ------------------------------------------------------------------------


async def lock_holders(context: AppContext, dispatch_id: str) -> list[Invite]:
    return [i for i in await invite_rows(context, dispatch_id) if i.fatigue_lock is not None]


async def test_two_rows_of_one_person_give_two_invites_and_one_lock(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    policy, dispatch = await make_dispatch(client, acme)
    csv = "email,external_id\nAnn@Example.com,c-1\nbob@example.com,c-2\nann@example.com,c-3\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(3, 3)
    invites = await invite_rows(context, dispatch["id"])
    assert len(invites) == 3
    holders = {i.external_id for i in invites if i.fatigue_lock is not None}
    assert holders == {"c-1", "c-2"}
    by_id = {i.external_id: i for i in invites}
    assert by_id["c-1"].uuid_hash == by_id["c-3"].uuid_hash  # the same person, normalised
    assert by_id["c-1"].uuid_hash != by_id["c-2"].uuid_hash

    # A later file for the same person under the same policy (another dispatch, another
    # questionnaire): no second holder.
    _, other = await make_dispatch(client, acme, policy=policy, questionnaire="q-2")
    later = await post_json(
        client, acme, other["id"], [{"email": "ANN@example.com", "external_id": "c-9"}]
    )
    assert later.status_code == 202, later.text
    assert await lock_holders(context, other["id"]) == []
    assert len(await invite_rows(context, other["id"])) == 1
    # Under another policy the same person gets a lock of its own.
    _, elsewhere = await make_dispatch(client, acme, name="Elsewhere", questionnaire="q-3")
    await post_json(
        client, acme, elsewhere["id"], [{"email": "ann@example.com", "external_id": "c-10"}]
    )
    assert [i.external_id for i in await lock_holders(context, elsewhere["id"])] == ["c-10"]


async def test_without_rule_1_no_invite_holds_a_lock(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme, fatigue={"pending_token": {"enabled": False}})
    csv = "email,external_id\nann@example.com,c-1\nann@example.com,c-2\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(2, 2)
    assert len(await invite_rows(context, dispatch["id"])) == 2
    assert await lock_holders(context, dispatch["id"]) == []


async def test_lock_follows_the_uuid_field(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme, fatigue={"uuid_field": "member_id"})
    csv = (
        "email,external_id,member_id\n"
        "ann@example.com,c-1,M-1\n"
        "ann.work@example.com,c-2,M-1\n"
        "ann@example.com,c-3,M-2\n"
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    holders = {i.external_id for i in await lock_holders(context, dispatch["id"])}
    assert holders == {"c-1", "c-3"}


async def test_mobile_as_uuid_field_is_normalised_before_locking(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(
        client,
        acme,
        lineup=[{"channel": "sms", "delay": "PT0S"}],
        fatigue={"uuid_field": "mobile"},
    )
    contacts = [
        {"mobile": "+33612345678", "external_id": "c-1"},
        {"mobile": "+33 6 12 34 56 78", "external_id": "c-2", "email": "x@example.com"},
        {"mobile": "+1 415 555 2671", "external_id": "c-3"},
        {"email": "only@example.com", "external_id": "c-4"},
    ]
    response = await post_json(client, acme, dispatch["id"], contacts)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(4, 3, rejected=1)
    assert response.json()["rejected_rows"][0]["row"] == 4
    holders = {i.external_id for i in await lock_holders(context, dispatch["id"])}
    assert holders == {"c-1", "c-3"}


async def test_an_expired_holder_gives_its_lock_to_the_next_file(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext, clock: FrozenClock
) -> None:
    _, dispatch = await make_dispatch(client, acme, validity="P6D")
    first = await post_csv(client, acme, dispatch["id"], "email,external_id\nann@example.com,c-1\n")
    assert first.status_code == 202, first.text
    clock.advance(timedelta(days=1))
    still = await post_csv(client, acme, dispatch["id"], "email,external_id\nann@example.com,c-2\n")
    assert still.status_code == 202, still.text
    assert {i.external_id for i in await lock_holders(context, dispatch["id"])} == {"c-1"}
    clock.advance(timedelta(days=6))  # c-1's token has expired
    later = await post_csv(client, acme, dispatch["id"], "email,external_id\nann@example.com,c-3\n")
    assert later.status_code == 202, later.text
    assert {i.external_id for i in await lock_holders(context, dispatch["id"])} == {"c-3"}
