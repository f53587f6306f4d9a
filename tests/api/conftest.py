"""Fixtures of the API tests: the account `acme` set up, and a client that sees server
errors as the 500s a real server would send."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from dispatch_engine.api.app import create_app
from dispatch_engine.context import AppContext
from tests.conftest import setup_account


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    """Account `acme` with its local queue; the admin headers."""
    await setup_account(client, admin)
    return admin


@pytest.fixture
async def lenient_client(context: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sees the 500 a real server would send instead of the raised error
    (requests racing on one app, errors the app must answer)."""
    app = create_app(context.settings, context=context)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
