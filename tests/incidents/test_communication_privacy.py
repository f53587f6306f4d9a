"""R-INC-6 communications: the recipient is stored sealed and audited as a keyed hash only,
while the API still shows it to operators (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import text

from dispatch_engine.context import AppContext
from dispatch_engine.incidents.communications import recipient_hash
from tests.conftest import setup_account
from tests.incidents.conftest import Desk

RECIPIENTS = {"direct_email": "Comms.Private@Example.com", "phone": "+14155550199"}


async def _raw(context: AppContext, sql: str) -> str:
    async with context.engine.connect() as connection:
        return repr((await connection.execute(text(sql))).all())


async def test_recipients_are_sealed_at_rest_and_hashed_in_the_audit(
    desk: Desk, context: AppContext
) -> None:
    await setup_account(desk.client, desk.admin)
    incident = await desk.incident()
    base = f"/v1/incidents/{incident['id']}/communications"
    for channel, recipient in RECIPIENTS.items():
        body = {"account": "acme", "channel": channel, "recipient": recipient, "what": "Told"}
        response = await desk.call("POST", base, json=body)
        assert response.status_code == 201, response.text
        assert response.json()["recipient"] == recipient

    listed = (await desk.call("GET", base)).json()
    assert sorted(e["recipient"] for e in listed) == sorted(RECIPIENTS.values())

    stored = await _raw(context, "SELECT * FROM incident_communications")
    audit = await _raw(context, "SELECT * FROM audit_log")
    for recipient in RECIPIENTS.values():
        for needle in (recipient, recipient.lower(), recipient.lstrip("+")):
            assert needle not in stored
            assert needle not in audit
    assert stored.count(f"'{context.cipher.current_key_id}:") == len(RECIPIENTS)

    audited = await desk.call("GET", "/v1/admin/audit", params={"action": "incident.communication"})
    afters = [item["after"] for item in audited.json()["items"]]
    assert all("recipient" not in after for after in afters)
    assert sorted(after["recipient_hash"] for after in afters) == sorted(
        recipient_hash(context.hasher, r) for r in RECIPIENTS.values()
    )
    assert recipient_hash(context.hasher, " comms.private@example.COM ") == recipient_hash(
        context.hasher, RECIPIENTS["direct_email"]
    )


async def test_a_sealed_recipient_copied_to_another_row_does_not_open(
    desk: Desk, context: AppContext
) -> None:
    """Bound to its row id: swapping ciphertexts between rows breaks both reads."""
    await setup_account(desk.client, desk.admin)
    incident = await desk.incident()
    base = f"/v1/incidents/{incident['id']}/communications"
    for recipient in RECIPIENTS.values():
        body = {"account": "acme", "channel": "phone", "recipient": recipient, "what": "Told"}
        assert (await desk.call("POST", base, json=body)).status_code == 201
    async with context.engine.begin() as connection:
        rows = (
            await connection.execute(text("SELECT id, recipient FROM incident_communications"))
        ).all()
        (first, sealed_first), (second, sealed_second) = rows
        swap = text("UPDATE incident_communications SET recipient = :r WHERE id = :i")
        await connection.execute(swap, [{"r": sealed_second, "i": first}])
        await connection.execute(swap, [{"r": sealed_first, "i": second}])
    response = await desk.call("GET", base)
    assert response.status_code == 500
    assert all(r not in response.text for r in RECIPIENTS.values())
