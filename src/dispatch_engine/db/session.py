"""The database names every layer may use: sessions, engines and the errors it raises.

Only `db/`, `store/` and `models/` import SQLAlchemy (an import-linter contract checks it).
The layers above hold a session, open its transaction and catch its errors, and for that
they import these names from here; every statement they run is a named function in
`store/` (or in `db/` when it differs by database).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = [
    "AsyncEngine",
    "AsyncSession",
    "DBAPIError",
    "IntegrityError",
    "OperationalError",
    "async_sessionmaker",
]
