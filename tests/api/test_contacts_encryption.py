"""Contact details at rest: addresses and attributes are stored encrypted and
no table keeps them in clear.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from dispatch_engine.context import AppContext
from dispatch_engine.models import Base
from dispatch_engine.security.crypto import DecryptionError
from dispatch_engine.security.sealing import open_contact
from tests.helpers import counts, invite_rows, make_dispatch, post_csv

# --- encryption at rest ---------------------------------------------------------------------------


SECRET_EMAIL = "secret.person@example.com"
SECRET_PHONE = "+33612345678"
SECRET_ATTRIBUTE = "ultramarine-zebra-4711"


def leaks(value: object) -> list[str]:
    text_value = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    text_value = text_value.lower()
    needles = [SECRET_EMAIL, "secret.person", SECRET_PHONE, SECRET_PHONE[1:], SECRET_ATTRIBUTE]
    return [n for n in needles if n.lower() in text_value]


async def upload_secret_contact(
    client: httpx.AsyncClient, admin: dict[str, str], dispatch_id: str
) -> None:
    csv = (
        "Email,Mobile,external_id,favourite_colour\n"
        f"{SECRET_EMAIL},{SECRET_PHONE},c-secret,{SECRET_ATTRIBUTE}\n"
    )
    response = await post_csv(client, admin, dispatch_id, csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(1, 1)


async def test_addresses_and_attributes_are_encrypted_at_rest(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    await upload_secret_contact(client, acme, dispatch["id"])
    async with context.engine.connect() as connection:
        result = await connection.execute(text("SELECT * FROM invites"))
        columns = list(result.keys())
        rows = result.all()
    assert len(rows) == 1
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            assert leaks(value) == [], f"invites.{column} holds contact data in clear"
    (invite,) = await invite_rows(context, dispatch["id"])
    assert invite.contact is not None
    opened = open_contact(context.cipher, invite.id, invite.contact)
    assert opened["email"] == SECRET_EMAIL
    assert opened["mobile"] == SECRET_PHONE
    assert opened["attributes"] == {"favourite_colour": SECRET_ATTRIBUTE}
    # Bound to its invite: the ciphertext does not open under another invite's id.
    with pytest.raises(DecryptionError):
        open_contact(context.cipher, "inv_other", invite.contact)


async def test_no_table_keeps_contact_details_in_clear(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    await upload_secret_contact(client, acme, dispatch["id"])
    found: list[str] = []
    async with context.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            result = await connection.execute(text(f"SELECT * FROM {table.name}"))
            columns = list(result.keys())
            for row in result.all():
                for column, value in zip(columns, row, strict=True):
                    if leaks(value):
                        found.append(f"{table.name}.{column}")
    assert found == []
