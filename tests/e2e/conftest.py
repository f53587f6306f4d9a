"""Fixtures of the end-to-end tests: account `acme` on Monday 10:00 UTC through `Api`, a
second account, and operator and backend keys. The worker comes from tests/conftest.py."""

from __future__ import annotations

import httpx
import pytest

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from tests.conftest import bearer, new_key, setup_account
from tests.helpers import MONDAY_10, Api


@pytest.fixture
async def acme(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FrozenClock
) -> dict[str, str]:
    """Monday 10:00 UTC, account `acme` with its local queue; the admin headers."""
    clock.set(MONDAY_10)
    await setup_account(client, admin)
    return admin


@pytest.fixture
def api(client: httpx.AsyncClient, acme: dict[str, str]) -> Api:
    return Api(client, acme)


@pytest.fixture
async def globex(client: httpx.AsyncClient, admin: dict[str, str], api: Api) -> Api:
    """A second account, to show what stays within one account."""
    await setup_account(client, admin, "globex")
    return Api(client, admin, "globex")


@pytest.fixture
async def operator(context: AppContext) -> dict[str, str]:
    return bearer(await new_key(context, "operator"))


@pytest.fixture
async def backend(context: AppContext) -> dict[str, str]:
    return bearer(await new_key(context, "backend", "acme"))
