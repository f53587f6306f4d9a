"""What more than one test module uses, other than fixtures: the HTTP API as a client sees
it (`Api`, and plain functions for the policy, dispatch and contact calls), the check of
an RFC 9457 problem, one round of the worker, the store lookups for what the API does not
show, and the people, times, business hours and key rings the tests share.

Where things go: fixtures in conftest.py (tests/conftest.py for the app, the database and
the worker; tests/api/conftest.py and tests/e2e/conftest.py for their folders), next to
the setup functions tests/conftest.py already exports (make_settings, empty_database,
new_key, bearer, setup_account, create_policy, templates_for, report_incident); anything
else two test modules share, here; what one module alone uses stays in that module.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from dispatch_engine.api.app import create_app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext, build_context
from dispatch_engine.models import Base, Invite, OutboxEntry
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import bearer, create_policy, make_settings, new_key, templates_for

# --- paths, people, times, business hours ---------------------------------------------------

ACME = "/v1/accounts/acme"
POLICIES = f"{ACME}/policies"
DISPATCHES = f"{ACME}/dispatches"
ANY = {"If-Match": "*"}
CSV = {"Content-Type": "text/csv"}

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FRIDAY_10 = datetime(2026, 3, 6, 10, 0, tzinfo=UTC)
SATURDAY_10 = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
ANN = {"email": "ann@example.com", "mobile": "+33612345678"}
BOB = {"email": "bob@example.com", "mobile": "+14155552671"}
CAT = {"email": "cat@example.com", "mobile": "+447911123456"}
DAN = {"email": "dan@example.com", "mobile": "+16502530000"}
EMAIL = {"channel": "email", "delay": "PT0S"}
ONE_EMAIL = [EMAIL]


def utc(text_value: str) -> datetime:
    """An ISO 8601 time with an offset, in UTC."""
    return datetime.fromisoformat(text_value).astimezone(UTC)


def z(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A UTC time."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ALL_DAYS = (*WEEKDAYS, "sat", "sun")


def hours(
    start: str, end: str, zone: str = "UTC", days: tuple[str, ...] = WEEKDAYS
) -> dict[str, Any]:
    """Business rules open from `start` to `end` on these days, in this time zone."""
    return {"time_zone": zone, "days": {d: [{"start": start, "end": end}] for d in days}}


OFFICE_UTC = hours("09:00", "17:00")
NO_FATIGUE = {"pending_token": {"enabled": False}, "max_invites": {"enabled": False}}


# --- problems (RFC 9457) ------------------------------------------------------------------


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status, whatever its type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def assert_problem(
    response: httpx.Response, status: int, slug: str, field: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type (naming `field`)."""
    body = is_problem(response, status)
    assert body["type"].endswith(f":{slug}"), body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


# --- policies, dispatches, contacts, audit ---------------------------------------------------


def match(policy: dict[str, Any], **extra: str) -> dict[str, str]:
    """If-Match on the policy's version (and any extra headers)."""
    return {"If-Match": f'"{policy["version"]}"', **extra}


async def fetch(client: httpx.AsyncClient, admin: dict[str, str], policy_id: str) -> dict[str, Any]:
    """The policy as read now."""
    response = await client.get(f"{POLICIES}/{policy_id}", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch(
    client: httpx.AsyncClient, admin: dict[str, str], policy: dict[str, Any], body: Any
) -> httpx.Response:
    """PATCH the policy at the version it was read at."""
    return await client.patch(
        f"{POLICIES}/{policy['id']}", headers={**admin, **match(policy)}, json=body
    )


async def insert(
    client: httpx.AsyncClient, admin: dict[str, str], policy_id: str, **body: Any
) -> httpx.Response:
    """Insert a message into the policy's lineup."""
    return await client.post(f"{POLICIES}/{policy_id}/lineup", headers=admin, json=body)


def shape(policy: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The lineup as (position, channel, delay)."""
    return [(m["position"], m["channel"], m["delay"]) for m in policy["lineup"]]


def dispatch_body(policy: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A dispatch on the policy with a template for each message (questionnaire `q-1`,
    tokens valid ten days), fields overridden by name."""
    body: dict[str, Any] = {
        "questionnaire_id": "q-1",
        "policy_id": policy["id"],
        "token_validity": "P10D",
        "message_templates": templates_for(policy),
    }
    body.update(overrides)
    return body


async def create_dispatch(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    policy: dict[str, Any],
    *,
    account: str = "acme",
    **overrides: Any,
) -> dict[str, Any]:
    """POST the `dispatch_body`; the dispatch as created (201)."""
    response = await client.post(
        f"/v1/accounts/{account}/dispatches",
        headers=headers,
        json=dispatch_body(policy, **overrides),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_dispatch(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    account: str = "acme",
    *,
    name: str = "Default",
    validity: str = "P14D",
    questionnaire: str = "q-1",
    **policy_body: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A policy (create_policy defaults unless overridden) and an active dispatch on it;
    `policy=` reuses an existing policy instead."""
    policy = policy_body.pop("policy", None) or await create_policy(
        client, admin, account, name=name, **policy_body
    )
    dispatch = await create_dispatch(
        client,
        admin,
        policy,
        account=account,
        questionnaire_id=questionnaire,
        token_validity=validity,
    )
    return policy, dispatch


async def post_csv(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    dispatch_id: str,
    body: str | bytes,
    *,
    account: str = "acme",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return await client.post(
        f"/v1/accounts/{account}/dispatches/{dispatch_id}/contacts",
        headers={**admin, **CSV, **(headers or {})},
        content=content,
    )


async def post_json(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    dispatch_id: str,
    contacts: list[Any],
    *,
    account: str = "acme",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        f"/v1/accounts/{account}/dispatches/{dispatch_id}/contacts",
        headers={**admin, **(headers or {})},
        json={"contacts": contacts},
    )


def counts(rows: int, accepted: int, rejected: int = 0, duplicates: int = 0) -> dict[str, int]:
    """An upload's counts, as its answer and its batch give them."""
    return {"rows": rows, "accepted": accepted, "rejected": rejected, "duplicates": duplicates}


async def get_batch(
    client: httpx.AsyncClient, admin: dict[str, str], batch_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(f"{ACME}/batches/{batch_id}", headers=admin, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def invites_by_external_id(
    client: httpx.AsyncClient, admin: dict[str, str], external_id: str, dispatch_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{ACME}/invites",
        headers=admin,
        params={"external_id": external_id, "dispatch": dispatch_id},
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def audit_of(
    client: httpx.AsyncClient, admin: dict[str, str], target_id: str
) -> list[dict[str, Any]]:
    response = await client.get("/v1/admin/audit", headers=admin, params={"target_id": target_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def concurrently(
    context: AppContext, *requests: Awaitable[httpx.Response]
) -> list[httpx.Response]:
    """Run requests so that each has read what it needs before any of them commits.

    SQLite serialises writers (BEGIN IMMEDIATE), so plain concurrency is enough there. On
    PostgreSQL the audit table is held locked until every request is waiting on a lock,
    which happens only after each has read and tried to write.
    """
    if context.engine.dialect.name != "postgresql":
        return list(await asyncio.gather(*requests))
    async with context.engine.connect() as watcher, context.engine.begin() as locker:
        await locker.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        tasks = [asyncio.ensure_future(r) for r in requests]
        for _ in range(500):
            waiting = (
                await watcher.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            ).scalar_one()
            await watcher.commit()
            if waiting >= len(tasks) or any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
    return list(await asyncio.gather(*tasks))


# --- the store, where the API does not show it ------------------------------------------------


async def invite_rows(context: AppContext, dispatch_id: str) -> list[Invite]:
    async with context.sessions() as session:
        rows = await session.execute(
            select(Invite).where(Invite.dispatch_id == dispatch_id).order_by(Invite.row_number)
        )
        return list(rows.scalars())


async def count_rows(context: AppContext, model: type[Base], dispatch_id: str) -> int:
    async with context.sessions() as session:
        column = model.__table__.c.dispatch_id  # type: ignore[attr-defined]
        query = select(func.count()).select_from(model).where(column == dispatch_id)
        return int((await session.execute(query)).scalar_one())


async def outbox_rows(context: AppContext, *invite_ids: str) -> int:
    """Rows in the outbox (of these invites, or all)."""
    query = select(func.count()).select_from(OutboxEntry)
    if invite_ids:
        query = query.where(OutboxEntry.invite_id.in_(invite_ids))
    async with context.sessions() as session:
        return int((await session.execute(query)).scalar_one())


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def raw_scan(context: AppContext) -> str:
    """Every value of every row of every table, as text (`SELECT *`, no ORM)."""
    chunks: list[str] = []
    async with context.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(text(f'SELECT * FROM "{table.name}"'))
            for row in rows.all():
                chunks.extend(_as_text(value) for value in row)
    return "\n".join(chunks)


# --- one account through the API -----------------------------------------------------------


class Api:
    """Thin helpers over the HTTP API for one account (`acme` unless named): each call
    checks the status the API answers on success and returns the body."""

    def __init__(
        self, client: httpx.AsyncClient, headers: dict[str, str], account: str = "acme"
    ) -> None:
        self.client = client
        self.headers = headers
        self.account = account
        self.base = f"/v1/accounts/{account}"

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any call (full path) that must succeed; its JSON body."""
        response = await self.client.request(method, path, headers=self.headers, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    async def policy(
        self, name: str, lineup: list[dict[str, str]] | None = None, **body: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": name, "lineup": lineup or ONE_EMAIL, **body}
        response = await self.client.post(
            f"{self.base}/policies", headers=self.headers, json=payload
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def get_policy(self, policy_id: str) -> tuple[dict[str, Any], str]:
        response = await self.client.get(f"{self.base}/policies/{policy_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json(), response.headers["ETag"]

    async def etag(self, policy_id: str) -> str:
        return (await self.get_policy(policy_id))[1]

    async def sandbox(self) -> dict[str, Any]:
        response = await self.client.get(f"{self.base}/policies", headers=self.headers)
        assert response.status_code == 200, response.text
        first: dict[str, Any] = response.json()[0]
        assert first["sandbox"] is True
        return first

    async def patch_policy(self, policy_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.patch(
            f"{self.base}/policies/{policy_id}",
            headers={**self.headers, "If-Match": await self.etag(policy_id)},
            json=body,
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def patch_step(
        self, policy_id: str, step_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        response = await self.client.patch(
            f"{self.base}/policies/{policy_id}/lineup/{step_id}",
            headers={**self.headers, "If-Match": await self.etag(policy_id)},
            json=body,
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def preview(self, policy_id: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            f"{self.base}/policies/{policy_id}/preview", headers=self.headers, json=body
        )

    async def dispatch(
        self, policy: dict[str, Any], questionnaire: str = "q1", validity: str = "P7D"
    ) -> dict[str, Any]:
        return await create_dispatch(
            self.client,
            self.headers,
            policy,
            account=self.account,
            questionnaire_id=questionnaire,
            token_validity=validity,
        )

    async def post(
        self, dispatch: dict[str, Any], *contacts: dict[str, Any], **headers: str
    ) -> None:
        """Post contacts as JSON (extra headers by name); every one must be accepted."""
        response = await self.client.post(
            f"{self.base}/dispatches/{dispatch['id']}/contacts",
            headers={**self.headers, **headers},
            json={"contacts": list(contacts)},
        )
        assert response.status_code == 202, response.text
        assert response.json()["counts"]["accepted"] == len(contacts), response.text

    async def invite(self, dispatch: dict[str, Any] | None, external_id: str) -> dict[str, Any]:
        """The one invite of this external id (in the dispatch, or in the account)."""
        params = {"external_id": external_id}
        if dispatch is not None:
            params["dispatch"] = dispatch["id"]
        response = await self.client.get(
            f"{self.base}/invites", headers=self.headers, params=params
        )
        assert response.status_code == 200, response.text
        found = response.json()
        assert len(found) == 1, found
        result: dict[str, Any] = found[0]
        return result

    async def stats(self, dispatch: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.get(
            f"{self.base}/dispatches/{dispatch['id']}/stats", headers=self.headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def control(self, path: str, headers: dict[str, str] | None = None) -> None:
        """POST …/pause or …/resume of a dispatch or policy."""
        response = await self.client.post(f"{self.base}/{path}", headers=headers or self.headers)
        assert response.status_code == 200, response.text

    async def event(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"{self.base}/events", headers=headers or self.headers, json=body
        )

    async def receive(self, max_messages: int = 100, visibility: int = 30) -> list[dict[str, Any]]:
        """Receive from the account's local queue (without acking)."""
        response = await self.client.get(
            f"{self.base}/queue/messages",
            headers=self.headers,
            params={"max": max_messages, "visibility": visibility},
        )
        assert response.status_code == 200, response.text
        result: list[dict[str, Any]] = response.json()
        return result

    async def ack(self, receipts: list[str]) -> dict[str, Any]:
        response = await self.client.post(
            f"{self.base}/queue/ack", headers=self.headers, json={"receipts": receipts}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def pull(self) -> list[dict[str, Any]]:
        """Receive and ack everything visible on the local queue; returns the bodies."""
        messages = await self.receive(max_messages=1000)
        if messages:
            assert (await self.ack([m["receipt"] for m in messages]))["acked"] == len(messages)
        return [m["body"] for m in messages]


@asynccontextmanager
async def api_of(context: AppContext) -> AsyncIterator[Api]:
    """`Api` with a new admin key on an app of its own over this context."""
    transport = httpx.ASGITransport(app=create_app(context.settings, context=context))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield Api(http, bearer(await new_key(context, "admin")))


async def first_message(api: Api, external_id: str) -> tuple[str, str | None]:
    """State and reason of the first message of the one invite of this external id."""
    message = (await api.invite(None, external_id))["messages"][0]
    return message["state"], message["reason"]


def contact(person: dict[str, Any], external_id: str, **extra: Any) -> dict[str, Any]:
    return {**person, "external_id": external_id, **extra}


def first(invite: dict[str, Any]) -> dict[str, Any]:
    """The invite's first message."""
    message: dict[str, Any] = invite["messages"][0]
    return message


def outcomes(invite: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(state, reason) of each of the invite's messages."""
    return [(m["state"], m["reason"]) for m in invite["messages"]]


def recipients(bodies: list[dict[str, Any]]) -> list[str]:
    """The addresses queue message bodies go to, sorted."""
    return sorted(b["recipient"].get("email") or b["recipient"]["mobile"] for b in bodies)


# --- the worker -------------------------------------------------------------------------------


async def tick(worker: Worker) -> None:
    """One round of the worker: deliver what is due, then relay the outbox."""
    await worker.deliver()
    await worker.relay_outbox()


# --- key rings (the key-rotation tests) -----------------------------------------------------


def ring(purpose: str, *key_ids: str) -> str:
    """A key ring of fixed test keys, first id current."""
    return ",".join(
        f"{key_id}:{base64.b64encode(hashlib.sha256(f'{purpose}/{key_id}'.encode()).digest()).decode()}"
        for key_id in key_ids
    )


ENC_K1, ENC_K2_K1, ENC_K2 = ring("enc", "k1"), ring("enc", "k2", "k1"), ring("enc", "k2")
MAC_K1, MAC_K2_K1 = ring("mac", "k1"), ring("mac", "k2", "k1")


def context_for(url: str, data_dir: Path, enc: str, mac: str, clock: FrozenClock) -> AppContext:
    """A context on the database at `url` with these encryption and HMAC key rings."""
    settings = make_settings(url, data_dir, encryption_keys=enc, hmac_keys=mac)
    return build_context(settings, clock)
