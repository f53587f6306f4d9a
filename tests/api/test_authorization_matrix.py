"""Every route × every role (and a backend key of another account) → the expected outcome.

A role that may act must get past authorisation (anything but 401/403/404); a role that may
not gets 403; a backend key limited to another account gets 404 so account ids do not leak.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dispatch_engine.context import AppContext
from tests.conftest import bearer, create_policy, new_key, setup_account, templates_for

ALL = {"admin", "operator", "backend", "backend_acme"}
READ = ALL
CONFIG = {"admin", "backend", "backend_acme"}
CONTROL = ALL
OPERATOR = {"admin", "operator"}
ADMIN = {"admin"}
PUBLIC = {"public"}  # no API key needed: every caller, even anonymous, gets 200

# (method, path template, body, roles allowed, account-scoped?)
ROUTES: list[tuple[str, str, Any, set[str], bool]] = [
    ("POST", "/v1/api-keys", {"role": "operator"}, ADMIN, False),
    ("GET", "/v1/api-keys", None, ADMIN, False),
    ("DELETE", "/v1/api-keys/{spare_key}", None, ADMIN, False),
    ("GET", "/v1/accounts", None, READ, False),
    ("POST", "/v1/accounts", {"id": "acme", "name": "Acme"}, CONFIG, True),
    ("GET", "/v1/accounts/{account}", None, READ, True),
    ("PATCH", "/v1/accounts/{account}", {"name": "Acme Inc"}, CONFIG, True),
    ("PUT", "/v1/accounts/{account}/queue-integration", {"kind": "local"}, CONFIG, True),
    ("GET", "/v1/accounts/{account}/queue-integration", None, READ, True),
    ("POST", "/v1/accounts/{account}/queue-integration/verify", None, READ, True),
    ("GET", "/v1/accounts/{account}/policies", None, READ, True),
    ("POST", "/v1/accounts/{account}/policies", {"name": "P-{role}"}, CONFIG, True),
    ("GET", "/v1/accounts/{account}/policies/{policy}", None, READ, True),
    ("GET", "/v1/accounts/{account}/policies/{policy}/versions", None, READ, True),
    ("GET", "/v1/accounts/{account}/policies/{policy}/versions/{version}", None, READ, True),
    ("PATCH", "/v1/accounts/{account}/policies/{policy}", {"name": "x"}, CONFIG, True),
    ("DELETE", "/v1/accounts/{account}/policies/{policy}", None, CONFIG, True),
    ("POST", "/v1/accounts/{account}/policies/{policy}/pause", None, CONTROL, True),
    ("POST", "/v1/accounts/{account}/policies/{policy}/resume", None, CONTROL, True),
    ("POST", "/v1/accounts/{account}/policies/{policy}/copy-to-sandbox", None, CONFIG, True),
    (
        "POST",
        "/v1/accounts/{account}/policies/{policy}/lineup",
        {"channel": "email", "delay": "P1D"},
        CONFIG,
        True,
    ),
    (
        "PATCH",
        "/v1/accounts/{account}/policies/{policy}/lineup/{message}",
        {"delay": "P1D"},
        CONFIG,
        True,
    ),
    ("DELETE", "/v1/accounts/{account}/policies/{policy}/lineup/{message}", None, CONFIG, True),
    ("GET", "/v1/accounts/{account}/dispatches", None, READ, True),
    (
        "POST",
        "/v1/accounts/{account}/dispatches",
        {"questionnaire_id": "q", "policy_id": "{policy}", "token_validity": "P30D"},
        CONFIG,
        True,
    ),
    ("GET", "/v1/accounts/{account}/dispatches/{dispatch}", None, READ, True),
    ("PATCH", "/v1/accounts/{account}/dispatches/{dispatch}", {}, CONFIG, True),
    ("POST", "/v1/accounts/{account}/dispatches/{dispatch}/pause", None, CONTROL, True),
    ("POST", "/v1/accounts/{account}/dispatches/{dispatch}/resume", None, CONTROL, True),
    (
        "POST",
        "/v1/accounts/{account}/dispatches/{dispatch}/contacts",
        {"contacts": [{"email": "a@example.com"}]},
        CONFIG,
        True,
    ),
    ("GET", "/v1/accounts/{account}/batches/{batch}", None, READ, True),
    ("GET", "/v1/accounts/{account}/invites/{invite}", None, READ, True),
    ("GET", "/v1/accounts/{account}/invites?token={token}", None, READ, True),
    ("GET", "/v1/accounts/{account}/queue/messages", None, CONFIG, True),
    ("POST", "/v1/accounts/{account}/queue/ack", {"receipts": ["nope"]}, CONFIG, True),
    ("GET", "/v1/accounts/{account}/dispatches/{dispatch}/stats", None, READ, True),
    (
        "POST",
        "/v1/accounts/{account}/policies/{policy}/preview",
        {"posted_at": "2026-03-02T09:00:00Z"},
        READ,
        True,
    ),
    (
        "POST",
        "/v1/accounts/{account}/events",
        {"type": "unsubscribe", "channel": "email", "address": "x@example.com"},
        CONFIG,
        True,
    ),
    (
        "DELETE",
        "/v1/accounts/{account}/unsubscribes",
        {"channel": "email", "address": "x@example.com"},
        OPERATOR,
        True,
    ),
    ("POST", "/v1/admin/pauses", {"scope": "channel", "target": "sms"}, OPERATOR, False),
    ("GET", "/v1/admin/pauses", None, OPERATOR, False),
    ("DELETE", "/v1/admin/pauses/{pause}", None, OPERATOR, False),
    ("GET", "/v1/admin/audit", None, OPERATOR, False),
    ("POST", "/v1/incidents", {"title": "Queue down", "service": "SQS relay"}, OPERATOR, False),
    ("GET", "/v1/incidents", None, OPERATOR, False),
    ("GET", "/v1/incidents/{incident}", None, OPERATOR, False),
    ("PATCH", "/v1/incidents/{incident}", {"impact": "slow"}, OPERATOR, False),
    ("POST", "/v1/incidents/{incident}/acknowledge", {"severity": "P3"}, OPERATOR, False),
    (
        "POST",
        "/v1/incidents/{incident}/transitions",
        {"to": "acknowledged", "severity": "P3"},
        OPERATOR,
        False,
    ),
    (
        "POST",
        "/v1/incidents/{incident}/status-updates",
        {"template": "investigating", "symptoms": "late emails"},
        OPERATOR,
        False,
    ),
    ("GET", "/v1/incidents/{incident}/status-updates", None, OPERATOR, False),
    ("GET", "/v1/incidents/{incident}/impacted-sendings", None, OPERATOR, False),
    (
        "POST",
        "/v1/incidents/{incident}/approvals",
        {
            "account": "acme",
            "approver_email": "owner@example.com",
            "channel": "email",
            "approved_at": "2026-03-02T09:00:00Z",
        },
        OPERATOR,
        False,
    ),
    ("GET", "/v1/incidents/{incident}/approvals", None, OPERATOR, False),
    (
        "POST",
        "/v1/incidents/{incident}/resends",
        {"sendings": ["m_unknown"], "dry_run": True},
        OPERATOR,
        False,
    ),
    ("GET", "/v1/incidents/{incident}/resends", None, OPERATOR, False),
    (
        "POST",
        "/v1/incidents/{incident}/communications",
        {"account": "acme", "channel": "phone", "recipient": "Olivia", "what": "called"},
        OPERATOR,
        False,
    ),
    ("GET", "/v1/incidents/{incident}/communications", None, OPERATOR, False),
    (
        "PUT",
        "/v1/incidents/{resolved_incident}/postmortem",
        {"findings": "f", "improvement_actions": ["a"], "link": "https://wiki.example/pm"},
        OPERATOR,
        False,
    ),
    ("GET", "/v1/incidents/{resolved_incident}/postmortem", None, OPERATOR, False),
    ("GET", "/v1/status-feed", None, PUBLIC, False),
    (
        "POST",
        "/v1/admin/notification-webhooks",
        {"name": "ops", "url": "https://hooks.example.com/services/T0/B0/x"},
        OPERATOR,
        False,
    ),
    ("GET", "/v1/admin/notification-webhooks", None, OPERATOR, False),
    ("DELETE", "/v1/admin/notification-webhooks/{webhook}", None, OPERATOR, False),
    # Choosing an SQS-compatible server is an operator's decision: admin keys only (last, so
    # the routes before it still find the local queue).
    (
        "PUT",
        "/v1/accounts/{account}/queue-integration",
        {
            "kind": "sqs",
            "queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
            "region": "us-east-1",
            "endpoint_url": "https://sqs-compatible.example.com",
        },
        ADMIN,
        True,
    ),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in ids.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def test_every_route_is_in_the_matrix(context: AppContext) -> None:
    from dispatch_engine.api.app import create_app

    paths = create_app(context.settings, context=context).openapi()["paths"]
    declared = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    }
    templated = {
        (m, p.replace("{account}", "{account_id}").replace("{policy}", "{policy_id}")
         .replace("{message}", "{message_id}").replace("{dispatch}", "{dispatch_id}")
         .replace("{spare_key}", "{key_id}").replace("{batch}", "{batch_id}")
         .replace("{invite}", "{invite_id}").replace("{pause}", "{pause_id}")
         .replace("{resolved_incident}", "{incident_id}").replace("{incident}", "{incident_id}")
         .replace("{webhook}", "{webhook_id}").replace("{version}", "{number}")
             .split("?")[0])
        for m, p, *_ in ROUTES
    }  # fmt: skip
    assert declared == templated


async def _incident(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    created = await client.post(
        "/v1/incidents", headers=admin, json={"title": "Matrix", "service": "relay"}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _webhook(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    created = await client.post(
        "/v1/admin/notification-webhooks",
        headers=admin,
        json={"name": "spare", "url": "https://hooks.example.com/spare"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.mark.parametrize("role", sorted(ALL | {"backend_other", "anonymous", "revoked"}))
async def test_authorization_matrix(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str], role: str
) -> None:
    await setup_account(client, admin, "acme")
    await setup_account(client, admin, "other")
    policy = await create_policy(client, admin)
    dispatch = (
        await client.post(
            "/v1/accounts/acme/dispatches",
            headers=admin,
            json={
                "questionnaire_id": "q",
                "policy_id": policy["id"],
                "token_validity": "P30D",
                "message_templates": templates_for(policy),
            },
        )
    ).json()
    batch = (
        await client.post(
            f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
            headers=admin,
            json={"contacts": [{"email": "someone@example.com", "external_id": "x"}]},
        )
    ).json()
    invite = (await client.get("/v1/accounts/acme/invites?external_id=x", headers=admin)).json()[0]
    keys = {
        "admin": admin,
        "operator": bearer(await new_key(context, "operator")),
        "backend": bearer(await new_key(context, "backend")),
        "backend_acme": bearer(await new_key(context, "backend", "acme")),
        "backend_other": bearer(await new_key(context, "backend", "other")),
        "anonymous": {},
    }
    revoked_key = await new_key(context, "admin")
    listed = (await client.get("/v1/api-keys", headers=admin)).json()
    revoked_id = next(k["id"] for k in listed if revoked_key.startswith(f"de_{k['prefix']}_"))
    assert (await client.delete(f"/v1/api-keys/{revoked_id}", headers=admin)).status_code == 204
    keys["revoked"] = bearer(revoked_key)
    incident = await _incident(client, admin)
    resolved = await _incident(client, admin)
    for step in ("acknowledged", "investigating", "identified", "resolved"):
        moved = await client.post(
            f"/v1/incidents/{resolved}/transitions",
            headers=admin,
            json={"to": step, "severity": "P2"},
        )
        assert moved.status_code == 200, moved.text
    pm = {"findings": "f", "improvement_actions": ["a"], "link": "https://wiki.example/pm"}
    assert (
        await client.put(f"/v1/incidents/{resolved}/postmortem", headers=admin, json=pm)
    ).status_code == 201

    for method, template, body, allowed, scoped in ROUTES:
        spare = (await client.post("/v1/api-keys", headers=admin, json={"role": "operator"})).json()
        pause = (
            await client.post(
                "/v1/admin/pauses", headers=admin, json={"scope": "account", "target": "other"}
            )
        ).json()
        policy_now = (
            await client.get(f"/v1/accounts/acme/policies/{policy['id']}", headers=admin)
        ).json()
        ids = {
            "account": "acme",
            "policy": policy["id"],
            "message": policy_now["lineup"][-1]["id"],
            "dispatch": dispatch["id"],
            "spare_key": spare["id"],
            "batch": batch["batch"],
            "invite": invite["id"],
            "token": invite["token"],
            "pause": pause.get("id") or pause.get("pause", ""),
            "incident": incident,
            "resolved_incident": resolved,
            "webhook": await _webhook(client, admin) if "{webhook}" in template else "",
            "role": role,
            "version": "1",
        }
        path = _fill(template, ids)
        # A stale If-Match: edits that honour it stop at 412, past authorisation, and leave
        # the shared policy, step and dispatch in place for the routes after them.
        headers = {**keys[role], "If-Match": '"999"'}
        response = await client.request(
            method, path, headers=headers, json=_fill(body, ids) if body is not None else None
        )
        where = f"{role} {method} {template}: {response.status_code} {response.text[:200]}"
        if allowed is PUBLIC:
            assert response.status_code == 200, where
        elif role in ("anonymous", "revoked"):
            assert response.status_code == 401, where
            assert response.headers["content-type"] == "application/problem+json", where
        elif role == "backend_other" and scoped:
            assert response.status_code == 404, where
        elif role in allowed or (role == "backend_other" and "backend" in allowed):
            assert response.status_code not in (401, 403, 404), where
        else:
            assert response.status_code == 403, where
            assert response.json()["type"].endswith(":forbidden"), where
