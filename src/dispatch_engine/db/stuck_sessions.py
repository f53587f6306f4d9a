"""Ending the sessions of a frozen or cut-off process that PostgreSQL cannot end itself.

`idle_in_transaction_session_timeout` ends a transaction whose client went quiet between
statements. A client frozen *inside* a statement's exchange (it sent Parse/Bind but not
Sync, or stopped reading a result that filled the socket) leaves its backend `active`,
waiting on the client: no server timeout ends that, and the row locks of its claim stay.
A healthy client never keeps a backend waiting on it mid-statement for more than a moment,
so any worker ends such a session of ours once it has waited longer than the claim lease.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatch_engine.observability import metrics

log = structlog.get_logger(__name__)
APPLICATION_PREFIX = "dispatch-engine"

_TERMINATE_STUCK = text(
    """
    SELECT pid, pg_terminate_backend(pid)
    FROM pg_stat_activity
    WHERE application_name LIKE :prefix
      AND pid <> pg_backend_pid()
      AND state = 'active'
      AND wait_event_type = 'Client'
      AND state_change < now() - make_interval(secs => :seconds)
    """
)


async def end_stuck_sessions(engine: AsyncEngine, lease: timedelta) -> int:
    """End our sessions stuck mid-statement on a silent client for longer than `lease`;
    returns how many. PostgreSQL only; needs the same database role (or pg_signal_backend)."""
    if engine.dialect.name != "postgresql":
        return 0
    async with engine.begin() as connection:
        ended = (
            await connection.execute(
                _TERMINATE_STUCK,
                {"prefix": f"{APPLICATION_PREFIX} %", "seconds": lease.total_seconds()},
            )
        ).all()
    if ended:
        metrics.STUCK_SESSIONS_ENDED.inc(len(ended))
        log.warning("stuck_sessions_ended", count=len(ended))
    return len(ended)
