"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from dispatch_engine.api.deps import ContextDep
from dispatch_engine.db.migrate import current_revision, head_revision
from dispatch_engine.schemas.service import Readiness
from dispatch_engine.store.health import ping_database

router = APIRouter(tags=["service"])


@router.get(
    "/healthz",
    summary="Liveness probe",
    description='Answers 200 `{"status": "ok"}` while the process is up; touches nothing '
    "else (use it as the liveness probe). No key needed.",
)
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness probe",
    description="Ready when the database answers and its schema is at the migrations' head "
    "(`dispatch-engine migrate`); otherwise 503 with the failing check. Use it as the "
    "readiness probe. No key needed.",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: a check failed."}},
)
async def readyz(context: ContextDep) -> JSONResponse:
    """Ready when the database answers and its schema is at the migrations' head."""
    checks: dict[str, str] = {}
    try:
        await ping_database(context.engine)
        checks["database"] = "ok"
        current = await current_revision(context.engine)
        head = head_revision(context.settings.effective_database_url)
        checks["migrations"] = "ok" if current == head else f"at {current}, head is {head}"
    except Exception as exc:  # readiness reports, it does not raise
        checks.setdefault("database", f"unreachable ({type(exc).__name__})")
    ready = all(value == "ok" for value in checks.values()) and len(checks) == 2
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
