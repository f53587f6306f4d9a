"""Transaction failures that say nothing about the data: try the transaction again.

PostgreSQL aborts one of two transactions that wait on each other (deadlock, SQLSTATE
40P01) or that cannot be serialised (40001). Both are the database choosing a victim, not a
fault of the request; the whole transaction can be run again as it was, after a
`db.leases.backoff` (full jitter, so the two racers do not meet again in step).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
SQLSTATE_NAMES = {"40P01": "deadlock", "40001": "serialization"}


def transient_kind(error: BaseException) -> str | None:
    """`deadlock` or `serialization` when the database aborted the transaction to break a
    conflict with another one; None for any other error."""
    if not isinstance(error, DBAPIError):
        return None
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return SQLSTATE_NAMES.get(sqlstate) if sqlstate in RETRYABLE_SQLSTATES else None
