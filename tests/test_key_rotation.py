"""`dispatch-engine keys reencrypt`: a real store seeded under key `k1` through the API, the
ingest and the worker, then the rings switched to `k2,k1` and the command run (SQLite and
PostgreSQL). Afterwards everything is under `k2`, still reads, matches what a fresh ingest
computes, and the delivery pipeline still honours what was recorded under `k1`."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner, Result

from dispatch_engine.__main__ import app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.incidents.communications import open_recipient
from dispatch_engine.models import (
    Base,
    FatigueLedger,
    IncidentCommunication,
    Invite,
    NotificationWebhook,
    QueueIntegration,
    Unsubscribe,
)
from dispatch_engine.queues.factory import integration_secrets
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.security.hashing import keyed_hash
from dispatch_engine.security.sealing import open_contact
from dispatch_engine.services.key_rotation import ENCRYPTED_COLUMNS
from dispatch_engine.store.lookups import load_unsubscribes
from tests.conftest import (
    T0,
    create_policy,
    empty_database,
    setup_account,
)
from tests.helpers import (
    ENC_K1,
    ENC_K2,
    ENC_K2_K1,
    MAC_K1,
    MAC_K2_K1,
    NO_FATIGUE,
    ONE_EMAIL,
    Api,
    api_of,
    context_for,
    first_message,
    tick,
)

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SQS_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/invitations"
HOOK_URL = "https://hooks.example.com/services/T000/B000/XXXXXXXX"
COMMUNICATION_RECIPIENT = "+14155550123"  # an incident communication's recipient
ANN = {"email": "ann@example.com", "mobile": "+33612345678"}
BOB = {"email": "bob@example.com", "mobile": "+14155552671", "plan": "gold"}
CAT = {"email": "cat@example.com", "mobile": "+447911123456"}
GUS = {"email": "gus@example.com"}
HAL = {"email": "hal@example.com"}
DAN = {"email": "dan@example.com", "mobile": "+16502530000", "Customer_ID": " ABC-42 "}
EVE = {"email": "eve@example.com"}
EMAIL_THEN_SMS = [{"channel": "email", "delay": "PT0S"}, {"channel": "sms", "delay": "P1D"}]
# The fatigue UUID a fresh ingest derives for each seeded (live) person.
UUID_VALUES = {
    "ann-1": "ann@example.com",
    "bob-1": "bob@example.com",
    "dan-1": "abc-42",
    "hal-1": "hal@example.com",
}


# --- phases ---------------------------------------------------------------------------------


async def seed(url: str, data_dir: Path) -> dict[str, Any]:
    """Everything under k1: invites (one with an attribute UUID, one erased), sends and
    locks, an SQS secret, a notification webhook, unsubscribes. Returns the plaintexts."""
    clock = FrozenClock(T0)
    context = context_for(url, data_dir, ENC_K1, MAC_K1, clock)
    try:
        await empty_database(context)
        async with api_of(context) as api:
            await setup_account(api.client, api.headers, "acme")
            await setup_account(api.client, api.headers, "globex", queue=False)
            await api.call(
                "PUT",
                "/v1/accounts/globex/queue-integration",
                json={
                    "kind": "sqs",
                    "queue_url": SQS_URL,
                    "region": "eu-west-1",
                    "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                    "secret_access_key": AWS_SECRET,
                },
            )
            await api.call(
                "POST", "/v1/admin/notification-webhooks", json={"name": "ops", "url": HOOK_URL}
            )
            incident = await api.call(
                "POST", "/v1/incidents", json={"title": "Relay down", "service": "SQS relay"}
            )
            await api.call(
                "POST",
                f"/v1/incidents/{incident['id']}/communications",
                json={
                    "account": "acme",
                    "channel": "phone",
                    "recipient": COMMUNICATION_RECIPIENT,
                    "what": "Told",
                },
            )
            main = await create_policy(api.client, api.headers, lineup=EMAIL_THEN_SMS)
            by_id = await create_policy(
                api.client,
                api.headers,
                name="ById",
                lineup=EMAIL_THEN_SMS,
                fatigue={"uuid_field": "Customer_ID"},
            )
            d1 = await api.dispatch(main, "q1", "P30D")
            d4 = await api.dispatch(by_id, "q4", "P30D")
            await api.post(
                d1,
                {**ANN, "external_id": "ann-1"},
                {**BOB, "external_id": "bob-1"},
                {**EVE, "external_id": "eve-1"},
                {**HAL, "external_id": "hal-1"},
            )
            await api.post(d4, {**DAN, "external_id": "dan-1"})
            worker = Worker(context)
            try:
                await tick(worker)  # first emails out: ledger rows, pending-token locks
                # A new UUID field later: the rotation must still find what was hashed.
                etag = (
                    await api.client.get(
                        f"/v1/accounts/acme/policies/{by_id['id']}", headers=api.headers
                    )
                ).headers["ETag"]
                response = await api.client.patch(
                    f"/v1/accounts/acme/policies/{by_id['id']}",
                    headers={**api.headers, "If-Match": etag},
                    json={"fatigue": {"uuid_field": "email"}},
                )
                assert response.status_code == 200, response.text
                for body in (
                    {"type": "unsubscribe", "channel": "email", "address": "Ann@Example.com"},
                    {"type": "unsubscribe", "channel": "email", "address": "fay@example.com"},
                    {"type": "response", "token": (await api.invite(None, "eve-1"))["token"]},
                ):
                    await api.call("POST", "/v1/accounts/acme/events", json=body)
                await tick(worker)
                await worker.maintain()  # Eve answered: her contact data is erased
            finally:
                await worker.shutdown(0)
            assert (await api.invite(None, "eve-1"))["contact_erased"] is True
            for external_id in UUID_VALUES:
                assert await first_message(api, external_id) == ("sent", None)
        return await plaintexts(context)
    finally:
        await context.aclose()


async def plaintexts(context: AppContext) -> dict[str, Any]:
    """Every encrypted value, decrypted by its real reader, keyed by table and row."""
    cipher = context.cipher
    async with context.sessions() as session:
        invites = (await session.execute(select(Invite))).scalars().all()
        integrations = (await session.execute(select(QueueIntegration))).scalars().all()
        hooks = (await session.execute(select(NotificationWebhook))).scalars().all()
        comms = (await session.execute(select(IncidentCommunication))).scalars().all()
    return {
        "invites": {
            i.id: open_contact(cipher, i.id, i.contact) for i in invites if i.contact is not None
        },
        "integrations": {
            i.account_id: integration_secrets(i, cipher) for i in integrations if i.secret
        },
        # as incidents.notifications._post opens it
        "hooks": {h.id: cipher.decrypt(h.url, aad=h.id.encode()) for h in hooks},
        "communications": {c.id: open_recipient(cipher, c.id, c.recipient) for c in comms},
    }


async def snapshot(url: str, data_dir: Path) -> dict[str, list[str]]:
    """Every row of every table, as text."""
    context = context_for(url, data_dir, ENC_K2_K1, MAC_K2_K1, FrozenClock(T0))
    tables: dict[str, list[str]] = {}
    try:
        async with context.engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                rows = await connection.execute(text(f'SELECT * FROM "{table.name}"'))
                tables[table.name] = sorted(repr(tuple(row)) for row in rows.all())
    finally:
        await context.aclose()
    return tables


async def check_rotated(url: str, data_dir: Path, originals: dict[str, Any]) -> None:
    context = context_for(url, data_dir, ENC_K2_K1, MAC_K2_K1, FrozenClock(T0))
    hasher = context.hasher
    try:
        assert await plaintexts(context) == originals
        async with context.sessions() as session:
            for spec in ENCRYPTED_COLUMNS:
                values = (await session.execute(select(spec.table.c[spec.column]))).scalars()
                assert all(v.startswith("k2:") for v in values if v is not None), spec.name

            invites = {i.external_id: i for i in (await session.execute(select(Invite))).scalars()}
            for external_id, uuid_value in UUID_VALUES.items():
                invite = invites[external_id]
                contact = open_contact(context.cipher, invite.id, invite.contact or "")
                # exactly what ingest computes for the same row now
                assert invite.uuid_hash == keyed_hash(hasher, uuid_value)
                assert invite.email_hash == keyed_hash(hasher, contact["email"])
                mobile = contact["mobile"]
                assert invite.mobile_hash == (keyed_hash(hasher, mobile) if mobile else None)
                assert invite.fatigue_lock is not None
                assert invite.fatigue_lock.endswith(":" + keyed_hash(hasher, uuid_value))
            bob = invites["bob-1"]
            assert bob.fatigue_lock == fatigue_lock_key(bob.policy_id, 1, False, bob.uuid_hash)
            eve = invites["eve-1"]  # erased: nothing to recompute from, left as it was
            assert eve.contact is None and eve.uuid_hash.startswith("k1:")

            ledger = {
                row.invite_id: row.uuid_hash
                for row in (await session.execute(select(FatigueLedger))).scalars()
            }
            for external_id in UUID_VALUES:
                assert ledger[invites[external_id].id] == invites[external_id].uuid_hash
            assert ledger[eve.id] == eve.uuid_hash  # carried forward at ingest only

            unsubscribed = {
                (u.account_id, u.channel, u.address_hash)
                for u in (await session.execute(select(Unsubscribe))).scalars()
            }
            ann_k2 = ("acme", "email", keyed_hash(hasher, "ann@example.com"))
            ann_k1 = ("acme", "email", "k1:" + hasher.digest("ann@example.com", "k1"))
            assert {ann_k1, ann_k2} <= unsubscribed  # the old row is kept
            # the lookup the worker makes for a fresh invite of Ann
            assert await load_unsubscribes(session, {ann_k2}) == {ann_k2}
            fay_k2 = ("acme", "email", keyed_hash(hasher, "fay@example.com"))
            assert fay_k2 not in unsubscribed  # never ingested: see carry_forward_unsubscribes
    finally:
        await context.aclose()


async def rule2_and_open_policies(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """A policy allowing one invite per person in 30 days, and one with no fatigue at all."""
    rule2 = await create_policy(
        api.client,
        api.headers,
        name="Rule2",
        lineup=ONE_EMAIL,
        fatigue={
            "pending_token": {"enabled": False},
            "max_invites": {"enabled": True, "count": 1, "days": 30, "scope": "all"},
        },
    )
    open_policy = await create_policy(
        api.client, api.headers, name="Open", lineup=ONE_EMAIL, fatigue=NO_FATIGUE
    )
    return rule2, open_policy


async def deliver_after_rotation(url: str, data_dir: Path, originals: dict[str, Any]) -> None:
    """k1 gone from the encryption ring: everything still reads, and fresh invites ingested
    under k2 are held back by unsubscribes, locks and sends recorded under k1."""
    clock = FrozenClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    context = context_for(url, data_dir, ENC_K2, MAC_K2_K1, clock)
    try:
        assert await plaintexts(context) == originals
        async with api_of(context) as api:
            policies = {p["name"]: p for p in await api.call("GET", "/v1/accounts/acme/policies")}
            rule2, open_policy = await rule2_and_open_policies(api)
            again = await api.dispatch(policies["Default"], "q1-again", "P30D")
            await api.post(again, {**BOB, "external_id": "bob-2"})
            counted = await api.dispatch(rule2, "q2", "P30D")
            await api.post(
                counted, {**HAL, "external_id": "hal-2"}, {**CAT, "external_id": "cat-1"}
            )
            unblocked = await api.dispatch(open_policy, "q3", "P30D")
            await api.post(
                unblocked, {**ANN, "external_id": "ann-2"}, {**GUS, "external_id": "gus-1"}
            )
            worker = Worker(context)
            try:
                await tick(worker)
            finally:
                await worker.shutdown(0)
            assert await first_message(api, "bob-2") == ("suppressed", "fatigue_pending_token")
            assert await first_message(api, "hal-2") == ("suppressed", "fatigue_max_invites")
            assert await first_message(api, "ann-2") == ("suppressed", "unsubscribed")
            assert await first_message(api, "cat-1") == ("sent", None)
            assert await first_message(api, "gus-1") == ("sent", None)
    finally:
        await context.aclose()


# --- the test -------------------------------------------------------------------------------


def _totals(result: Result) -> tuple[int, int, int]:
    match = re.search(
        r"total: changed (\d+), skipped (\d+), encrypted values under old keys (\d+)",
        result.stdout,
    )
    assert match, result.output
    changed, skipped, remaining = (int(g) for g in match.groups())
    return changed, skipped, remaining


def test_keys_reencrypt_moves_everything_to_the_current_keys(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    originals = asyncio.run(seed(migrated_url, tmp_path))
    assert len(originals["invites"]) == 4 and originals["hooks"]
    assert originals["integrations"] == {"globex": {"secret_access_key": AWS_SECRET}}
    assert list(originals["communications"].values()) == [COMMUNICATION_RECIPIENT]

    for name, value in {
        "DISPATCH_DATABASE_URL": migrated_url,
        "DISPATCH_DATA_DIR": str(tmp_path),
        "DISPATCH_ENCRYPTION_KEYS": ENC_K2_K1,
        "DISPATCH_HMAC_KEYS": MAC_K2_K1,
        "DISPATCH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    before = asyncio.run(snapshot(migrated_url, tmp_path))
    dry = runner.invoke(app, ["keys", "reencrypt", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would change" in dry.stdout
    would_change, skipped, remaining = _totals(dry)
    # 4 invites, the secret, the hook, the communication's recipient
    assert would_change > 0 and skipped == 0 and remaining == 7
    assert asyncio.run(snapshot(migrated_url, tmp_path)) == before

    run = runner.invoke(app, ["keys", "reencrypt", "--batch-size", "2"])
    assert run.exit_code == 0, run.output
    assert _totals(run) == (would_change, 0, 0)
    asyncio.run(check_rotated(migrated_url, tmp_path, originals))

    after = asyncio.run(snapshot(migrated_url, tmp_path))
    again = runner.invoke(app, ["keys", "reencrypt"])
    assert again.exit_code == 0, again.output
    assert _totals(again) == (0, 0, 0)
    assert asyncio.run(snapshot(migrated_url, tmp_path)) == after

    asyncio.run(deliver_after_rotation(migrated_url, tmp_path, originals))


def test_every_encrypting_call_site_has_its_column_registered() -> None:
    """A new encrypted column must join ENCRYPTED_COLUMNS (with its writer's aad)."""
    source = Path(__file__).parents[1] / "src" / "dispatch_engine"
    writers = {
        str(path.relative_to(source))
        for path in source.rglob("*.py")
        if re.search(r"\.encrypt(_json)?\(", path.read_text())
        and path.relative_to(source).as_posix() != "security/crypto.py"
        and path.parent.name != "key_rotation"
    }
    assert writers == {
        "security/sealing.py",
        "services/integrations.py",
        "incidents/notifications.py",
        "incidents/communications.py",
    }
    assert {spec.name for spec in ENCRYPTED_COLUMNS} == {
        "invites.contact",
        "queue_integrations.secret",
        "notification_webhooks.url",
        "incident_communications.recipient",
    }


async def ingest_under_new_hmac_key(url: str, data_dir: Path) -> None:
    """HMAC ring switched to k2 and `keys reencrypt` not run: ingest alone carries the
    opt-outs and fatigue history of returning people forward from k1."""
    clock = FrozenClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    context = context_for(url, data_dir, ENC_K2_K1, MAC_K2_K1, clock)
    try:
        async with api_of(context) as api:
            rule2, open_policy = await rule2_and_open_policies(api)
            counted = await api.dispatch(rule2, "q2", "P30D")
            # Eve: her only invite was erased, so only her k1 ledger row knows she was sent.
            await api.post(counted, {**EVE, "external_id": "eve-2"})
            unblocked = await api.dispatch(open_policy, "q3", "P30D")
            await api.post(
                unblocked,
                {"email": "fay@example.com", "external_id": "fay-1"},  # unsubscribed, never invited
                {**GUS, "external_id": "gus-1"},
            )
            worker = Worker(context)
            try:
                await tick(worker)
            finally:
                await worker.shutdown(0)
            assert await first_message(api, "eve-2") == ("suppressed", "fatigue_max_invites")
            assert await first_message(api, "fay-1") == ("suppressed", "unsubscribed")
            assert await first_message(api, "gus-1") == ("sent", None)
    finally:
        await context.aclose()


def test_ingest_carries_history_forward_before_any_reencrypt_run(
    migrated_url: str, tmp_path: Path
) -> None:
    asyncio.run(seed(migrated_url, tmp_path))
    asyncio.run(ingest_under_new_hmac_key(migrated_url, tmp_path))
