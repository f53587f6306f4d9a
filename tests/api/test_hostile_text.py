"""Hostile text at the boundary: NUL, lone surrogates and invalid UTF-8 are a 422, never a 500.

PostgreSQL cannot store a NUL in `text` or `\\u0000` in `jsonb`, and no database driver can
encode a lone surrogate, so such text used to reach the database and fail there (500 on
PostgreSQL, sometimes on SQLite). Every string the API takes is checked once, before any
route runs (api/text_guard.py); contact rows are checked one by one (ingest/rows.py).
Each probe asserts the 422 names the field and that nothing was stored.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dispatch_engine.api.routes import contacts
from tests.conftest import report_incident, setup_account
from tests.helpers import assert_problem, make_dispatch, post_csv

ACME = "/v1/accounts/acme"
MARK = "@@HOSTILE@@"
#: How each kind of hostile text is written in a JSON body.
IN_JSON = {
    "nul": rb"a\u0000b",
    "lone_surrogate": rb"a\ud800b",
    "invalid_utf8": b"a\xffb",
}
#: ... and percent-encoded in a URL (a UTF-8-encoded surrogate is invalid UTF-8 too).
IN_URL = {"nul": "a%00b", "lone_surrogate": "a%ED%A0%80b", "invalid_utf8": "a%FFb"}
OWNER = {"name": "Olivia Owner", "email": "owner@example.com", "phone": "+14155550100"}


def hostile_json(payload: Any, kind: str) -> bytes:
    """The payload as JSON with every MARK (value or key) replaced by hostile text."""
    return json.dumps(payload).encode().replace(MARK.encode(), IN_JSON[kind])


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """An account with a policy, a dispatch and an incident: targets for every probe."""
    await setup_account(client, admin)
    policy, dispatch = await make_dispatch(client, admin)
    return {
        "policy": policy,
        "dispatch": dispatch,
        "incident": await report_incident(client, admin),
    }


async def snapshot(client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]) -> Any:
    """What a refused request must leave unchanged (everything it could have written)."""
    paths = [
        "/v1/accounts",
        f"{ACME}/policies",
        f"{ACME}/dispatches",
        "/v1/incidents",
        "/v1/admin/pauses?include_lifted=true",
        f"/v1/incidents/{acme['incident']}/resends",
        f"/v1/incidents/{acme['incident']}/postmortem",
    ]
    state = []
    for path in paths:
        response = await client.get(path, headers=admin)
        state.append((path, response.status_code, response.json()))
    return state


# (name, method, path, payload with MARK, the field the 422 names)
BODY_PROBES: list[tuple[str, str, str, Any, str]] = [
    ("account name", "POST", "/v1/accounts", {"id": "beta", "name": MARK, "owner": OWNER}, "name"),
    (
        "account owner",
        "POST",
        "/v1/accounts",
        {"id": "beta", "name": "B", "owner": {**OWNER, "name": MARK}},
        "owner.name",
    ),
    ("account rename", "PATCH", ACME, {"name": MARK}, "name"),
    (
        "policy name",
        "POST",
        f"{ACME}/policies",
        {"name": MARK, "lineup": [{"channel": "email", "delay": "PT0S"}]},
        "name",
    ),
    ("incident title", "POST", "/v1/incidents", {"title": MARK, "service": "SQS"}, "title"),
    (
        "incident list (jsonb)",
        "POST",
        "/v1/incidents",
        {"title": "t", "service": "s", "stakeholders": ["ok", MARK]},
        "stakeholders.1",
    ),
    ("incident edit", "PATCH", "/v1/incidents/{incident}", {"description": MARK}, "description"),
    (
        "template key (jsonb)",
        "PATCH",
        f"{ACME}/dispatches/{{dispatch}}",
        {"message_templates": {MARK: "tpl"}},
        "message_templates",
    ),
    ("pause target", "POST", "/v1/admin/pauses", {"scope": "dispatch", "target": MARK}, "target"),
    (
        "pause reason",
        "POST",
        "/v1/admin/pauses",
        {"scope": "channel", "target": "sms", "reason": MARK},
        "reason",
    ),
    (
        "resend id",
        "POST",
        "/v1/incidents/{incident}/resends",
        {"sendings": ["m_1", MARK]},
        "sendings.1",
    ),
    (
        "postmortem (jsonb)",
        "PUT",
        "/v1/incidents/{incident}/postmortem",
        {
            "findings": "f",
            "improvement_actions": ["a"],
            "service_credits": [{"account": "acme", "credit": MARK}],
        },
        "service_credits.0.credit",
    ),
    (
        "unknown key",
        "POST",
        "/v1/accounts",
        {"id": "beta", "name": "B", "owner": OWNER, MARK: 1},
        "body",
    ),
]


def _path(template: str, acme: dict[str, Any]) -> str:
    return template.format(incident=acme["incident"], dispatch=acme["dispatch"]["id"])


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [p[1:] for p in BODY_PROBES],
    ids=[p[0] for p in BODY_PROBES],
)
async def test_hostile_text_in_a_json_body_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: dict[str, Any],
    method: str,
    path: str,
    payload: Any,
    field: str,
) -> None:
    before = await snapshot(client, admin, acme)
    for kind in IN_JSON:
        response = await client.request(
            method,
            _path(path, acme),
            headers={**admin, "Content-Type": "application/json"},
            content=hostile_json(payload, kind),
        )
        body = assert_problem(response, 422, "validation-error")
        # invalid UTF-8 cannot be placed within the document: the body as a whole is named
        assert body["field"] == ("body" if kind == "invalid_utf8" else field), (kind, body)
    assert await snapshot(client, admin, acme) == before


# (name, path with MARK in a query parameter or a path segment, the field the 422 names)
URL_PROBES = [
    ("invites by external id", f"{ACME}/invites?external_id={MARK}", "external_id"),
    ("invites by token", f"{ACME}/invites?token={MARK}", "token"),
    ("invites in dispatch", f"{ACME}/invites?external_id=x&dispatch={MARK}", "dispatch"),
    ("audit by target", f"/v1/admin/audit?target_id={MARK}", "target_id"),
    ("pauses by target", f"/v1/admin/pauses?target={MARK}", "target"),
    ("incidents by account", f"/v1/incidents?account={MARK}", "account"),
    ("unknown parameter", f"/v1/accounts?{MARK}=1", "query"),
    ("account id", f"/v1/accounts/{MARK}", "account_id"),
    ("policy id", f"{ACME}/policies/{MARK}", "policy_id"),
    ("incident id", f"/v1/incidents/{MARK}", "incident_id"),
    ("invite id", f"{ACME}/invites/{MARK}", "invite_id"),
]


@pytest.mark.parametrize(
    ("path", "field"), [p[1:] for p in URL_PROBES], ids=[p[0] for p in URL_PROBES]
)
async def test_hostile_text_in_a_query_or_path_parameter_is_422_naming_it(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], path: str, field: str
) -> None:
    for kind, text in IN_URL.items():
        response = await client.get(path.replace(MARK, text), headers=admin)
        body = assert_problem(response, 422, "validation-error")
        assert body["field"] == field, (kind, body)


async def test_hostile_text_in_a_path_is_refused_before_anything_changes(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]
) -> None:
    before = await snapshot(client, admin, acme)
    for kind, text in IN_URL.items():
        response = await client.post(
            f"{ACME}/policies/{text}/pause", headers=admin, json={"reason": "probe"}
        )
        assert assert_problem(response, 422, "validation-error")["field"] == "policy_id", kind
    assert await snapshot(client, admin, acme) == before


@pytest.mark.parametrize(
    ("header", "path"),
    [("Idempotency-Key", f"{ACME}/dispatches/{{dispatch}}/contacts"), ("If-Match", ACME)],
)
async def test_a_nul_in_a_header_the_service_reads_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], header: str, path: str
) -> None:
    before = await snapshot(client, admin, acme)
    response = await client.request(
        "POST" if "contacts" in path else "PATCH",
        _path(path, acme),
        headers=[*admin.items(), ("Content-Type", "application/json"), (header, "a\x00b")],
        content=json.dumps({"name": "New"} if "contacts" not in path else {"contacts": []}),
    )
    assert assert_problem(response, 422, "validation-error")["field"] == header
    assert await snapshot(client, admin, acme) == before


async def test_hostile_text_without_a_valid_key_is_still_401(
    client: httpx.AsyncClient, acme: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/accounts", headers={"Content-Type": "application/json"}, content=rb'{"name":"\u0000"}'
    )
    assert_problem(response, 401, "unauthenticated")
    response = await client.get(f"/v1/accounts/{IN_URL['nul']}")
    assert_problem(response, 401, "unauthenticated")


async def test_valid_non_ascii_text_and_escaped_surrogate_pairs_are_accepted(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]
) -> None:
    response = await client.patch(
        ACME,
        headers={**admin, "Content-Type": "application/json"},
        content=rb'{"name": "Caf\u00e9 \u2028 \ud83d\ude00 \\u0000"}',
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Café \u2028 😀 \\u0000"
    response = await client.get(
        f"{ACME}/invites?external_id=caf%C3%A9%20%F0%9F%98%80", headers=admin
    )
    assert response.status_code == 200, response.text


# --- contact files: a row with hostile text is rejected as a row ---------------------------


async def test_a_csv_row_with_a_nul_is_rejected_as_a_row(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]
) -> None:
    csv = (
        "email,external_id,first_name\n"
        "ann@example.com,c-1,Ann\n"
        "bob@example.com,c-\x002,Bob\n"
        "cy@example.com,c-3,C\x00y\n"
        "di@example.com,c-4,Di\n"
    )
    response = await post_csv(client, admin, acme["dispatch"]["id"], csv)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == {"rows": 4, "accepted": 2, "rejected": 2, "duplicates": 0}
    assert [(r["row"], r["field"]) for r in body["rejected_rows"]] == [
        (3, "external_id"),
        (4, "first_name"),
    ]
    assert "NUL" in body["rejected_rows"][0]["reason"]


@pytest.mark.parametrize(
    ("contact", "field"),
    [
        ({"email": "bob@example.com", "external_id": MARK}, "external_id"),
        ({"email": "bob@example.com", "attributes": {"first_name": MARK}}, "first_name"),
        ({"email": "bob@example.com", "attributes": {MARK: "x"}}, "attributes"),
        ({"email": "bob@example.com", MARK: "x"}, "attributes"),
    ],
)
async def test_a_json_contact_with_a_nul_is_rejected_as_a_row(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: dict[str, Any],
    contact: dict[str, Any],
    field: str,
) -> None:
    document = {"contacts": [{"email": "ann@example.com", "external_id": "c-1"}, contact]}
    response = await client.post(
        f"{ACME}/dispatches/{acme['dispatch']['id']}/contacts",
        headers={**admin, "Content-Type": "application/json"},
        content=hostile_json(document, "nul"),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == {"rows": 2, "accepted": 1, "rejected": 1, "duplicates": 0}
    assert [(r["row"], r["field"]) for r in body["rejected_rows"]] == [(2, field)]


@pytest.mark.parametrize("kind", ["lone_surrogate", "invalid_utf8"])
async def test_json_contacts_that_are_not_unicode_are_422_and_store_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], kind: str
) -> None:
    document = {"contacts": [{"email": "ann@example.com", "external_id": MARK}]}
    dispatch_id = acme["dispatch"]["id"]
    response = await client.post(
        f"{ACME}/dispatches/{dispatch_id}/contacts",
        headers={**admin, "Content-Type": "application/json"},
        content=hostile_json(document, kind),
    )
    # Refused before anything is stored, batch included (issue 20; it used to fail a batch).
    body = assert_problem(response, 422, "contact-file-refused")
    assert body["field"] == "body"
    assert "batch" not in body and "counts" not in body


# --- body size limits ---------------------------------------------------------------------


async def test_a_json_contact_body_over_the_limit_is_413(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(contacts, "MAX_JSON_BYTES", 1000)
    document = {"contacts": [{"email": f"p{i}@example.com"} for i in range(100)]}
    response = await client.post(
        f"{ACME}/dispatches/{acme['dispatch']['id']}/contacts", headers=admin, json=document
    )
    body = assert_problem(response, 413, "payload-too-large")
    assert body["field"] == "body"
    assert "1000 bytes" in body["detail"]


async def test_any_other_json_body_over_the_limit_is_413_before_it_is_read(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dispatch_engine.api import text_guard

    monkeypatch.setattr(text_guard, "MAX_BODY_BYTES", 1000)
    before = await snapshot(client, admin, acme)
    response = await client.post(
        "/v1/incidents",
        headers=admin,
        json={"title": "t", "service": "s", "description": "x" * 2000},
    )
    body = assert_problem(response, 413, "payload-too-large")
    assert body["field"] == "body"
    assert await snapshot(client, admin, acme) == before

    async def chunked() -> Any:  # no Content-Length: counted as it arrives
        yield b'{"title": "t", "service": "s", "description": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    response = await client.post(
        "/v1/incidents", headers={**admin, "Content-Type": "application/json"}, content=chunked()
    )
    assert_problem(response, 413, "payload-too-large")
    assert await snapshot(client, admin, acme) == before
