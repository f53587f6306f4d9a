"""Duplicates by external id in contact uploads: one invite per external id
and dispatch, across files; another dispatch makes another invite.
"""

from __future__ import annotations

import httpx

from dispatch_engine.context import AppContext
from dispatch_engine.models import Invite
from dispatch_engine.security.sealing import open_contact
from tests.helpers import (
    ACME,
    count_rows,
    counts,
    get_batch,
    invite_rows,
    invites_by_external_id,
    make_dispatch,
    post_csv,
    post_json,
)

# --- duplicates by external id ----------------------------------------------------------------------


async def test_same_external_id_in_one_file_and_in_a_later_file_gives_one_invite(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    first = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email,external_id\nann@example.com,c-1\nann.other@example.com,c-1\nbob@example.com,c-2\n",
    )
    assert first.status_code == 202, first.text
    assert first.json()["counts"] == counts(3, 2, duplicates=1)
    second = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email,external_id\nann@example.com,c-1\ncy@example.com,c-3\nbob@example.com,c-2\n",
    )
    assert second.status_code == 202, second.text
    assert second.json()["counts"] == counts(3, 1, duplicates=2)
    third = await post_json(
        client, acme, dispatch["id"], [{"email": "ann@example.com", "external_id": "c-1"}]
    )
    assert third.json()["counts"] == counts(1, 0, duplicates=1)

    (invite,) = await invites_by_external_id(client, acme, "c-1", dispatch["id"])
    assert invite["batch"] == first.json()["batch"]
    assert len(await invites_by_external_id(client, acme, "c-2", dispatch["id"])) == 1
    assert len(await invites_by_external_id(client, acme, "c-3", dispatch["id"])) == 1
    assert await count_rows(context, Invite, dispatch["id"]) == 3
    assert (await get_batch(client, acme, second.json()["batch"]))["counts"]["duplicates"] == 2
    # The first row of the file wins: the invite holds ann's address, not the later row's.
    rows = {row.external_id: row for row in await invite_rows(context, dispatch["id"])}
    assert rows["c-1"].contact is not None
    opened = open_contact(context.cipher, rows["c-1"].id, rows["c-1"].contact)
    assert opened["email"] == "ann@example.com"


async def test_same_external_id_in_another_dispatch_is_another_invite(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, one = await make_dispatch(client, acme)
    _, two = await make_dispatch(client, acme, name="Other", questionnaire="q-2")
    for dispatch in (one, two):
        response = await post_csv(client, acme, dispatch["id"], "email,external_id\na@b.com,c-1\n")
        assert response.json()["counts"] == counts(1, 1)
    found = (await client.get(f"{ACME}/invites?external_id=c-1", headers=acme)).json()
    assert sorted(i["dispatch"] for i in found) == sorted([one["id"], two["id"]])
