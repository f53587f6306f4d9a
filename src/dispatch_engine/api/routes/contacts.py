"""Contact files (`POST …/dispatches/{dispatch}/contacts`) and their pollable batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from dispatch_engine.api.deps import ConfigActor, ReadActor, SessionDep
from dispatch_engine.api.openapi import doc, problems
from dispatch_engine.context import AppContext
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import (
    Conflict,
    DomainError,
    FieldError,
    NotFound,
    PayloadTooLarge,
)
from dispatch_engine.ingest import batches, idempotency
from dispatch_engine.ingest.contact_file import ContactFile, open_csv, open_json
from dispatch_engine.ingest.csv_stream import CsvFormatError
from dispatch_engine.ingest.service import IngestTarget, ingest_stream
from dispatch_engine.models import ContactBatch, IdempotencyKey, new_id
from dispatch_engine.schemas.common import MAX_INT32
from dispatch_engine.schemas.contacts import BatchOut, ColumnsOut, RejectedRowOut
from dispatch_engine.schemas.problems import ContactFileProblem
from dispatch_engine.services.dispatches import get_dispatch
from dispatch_engine.store.batches import find_batch, rejected_rows_after
from dispatch_engine.store.policies import find_policy, live_lineup

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["contacts"])
MAX_JSON_BYTES = 64 * 1024 * 1024
SAMPLE_REJECTIONS = 100


async def _target(context: AppContext, account_id: str, dispatch_id: str) -> IngestTarget:
    async with context.sessions() as session, session.begin():
        dispatch = await get_dispatch(session, account_id, dispatch_id)
        policy = await find_policy(session, dispatch.policy_id)
        if policy is None or policy.deleted_at is not None:
            raise Conflict(
                "the dispatch's policy was deleted; move the dispatch to another policy first",
                slug="dispatch-policy-deleted",
            )
        lineup = await live_lineup(session, policy.id)
        session.expunge_all()
    if not lineup:
        raise Conflict(
            "the dispatch's policy has no lineup messages, so there is nothing to send; "
            "add a lineup message first",
            slug="empty-lineup",
        )
    return IngestTarget(dispatch, policy, lineup, context.clock.now())


async def _read_json(body: AsyncIterator[bytes]) -> bytes:
    """The whole JSON document (it is parsed in one piece); a larger one than MAX_JSON_BYTES
    is a 413 before any batch is created."""
    data = bytearray()
    async for chunk in body:
        data.extend(chunk)
        if len(data) > MAX_JSON_BYTES:
            raise PayloadTooLarge(MAX_JSON_BYTES, "send large files as text/csv")
    return bytes(data)


def _counts(batch: ContactBatch) -> dict[str, int]:
    return {
        "rows": batch.rows_total,
        "accepted": batch.accepted,
        "rejected": batch.rejected,
        "duplicates": batch.duplicates,
    }


async def _batch_out(
    session: SessionDep, batch: ContactBatch, after: int = 0, limit: int = SAMPLE_REJECTIONS
) -> BatchOut:
    rows = await rejected_rows_after(session, batch.id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return BatchOut(
        batch=batch.id,
        dispatch=batch.dispatch_id,
        status=batch.status,
        counts=_counts(batch),
        columns=ColumnsOut.model_validate(batch.column_report) if batch.column_report else None,
        error=batch.error,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        resumed_from=batch.resumed_from,
        rejected_rows=[
            RejectedRowOut(row=r.row_number, field=r.field, reason=r.reason) for r in rows
        ],
        next_rejected_after=rows[-1].row_number if more and rows else None,
    )


@router.post(
    "/dispatches/{dispatch_id}/contacts",
    status_code=202,
    response_model=BatchOut,
    summary="Upload a contact file",
    description=doc(
        """
        EM posts the dispatch's contacts as `text/csv` (streamed, any size: a header row,
        then one contact a row; columns `email`, `mobile`, `external_id`, `time_zone`, and
        any other column is a free attribute passed to the vendor) or as JSON
        `{"contacts": [{…}, …]}` (at most 64 MiB; send larger files as CSV). Column names
        are matched trimmed and case-insensitively, spaces and hyphens as underscores, with
        these aliases: `e-mail`, `email_address` → `email`; `phone`, `phone_number`,
        `mobile_number`, `mobile_phone` → `mobile`; `id` → `external_id`; `timezone` →
        `time_zone`. The answer's `columns` says which columns were recognised, which
        became attributes and which names were read as an alias.

        A file that cannot give a single contact is refused before anything is stored (422
        `contact-file-refused`, no batch, the Idempotency-Key left unused): an empty file, a
        first row that is not a header (a cell looks like an email address or a phone
        number, or no column is a known one), no column for an address of the lineup's
        channels or for the policy's fatigue UUID field, a column given twice.

        Rows are stored in chunks as they arrive: the batch can be polled
        (`GET …/batches/{batch}`) while the upload runs, and the 202 comes when the last row
        is stored, with the counts (`rows`, `accepted`, `rejected`, `duplicates`) and the
        first rejected rows. Each accepted contact becomes an invite with a fresh token;
        bad rows (no address for the lineup's channels, a malformed email or phone number,
        a missing fatigue UUID field) are rejected one by one with row number, field and
        reason, without failing the file. A repeated `external_id` in the dispatch counts
        as a duplicate and creates nothing.

        **Idempotency-Key** (optional, per account): a retry with the same key and the same
        body answers the first answer again (`Idempotent-Replayed: true`) and creates
        nothing; a retry of an upload that died midway carries on from the rows stored.
        `backend` and `admin` keys. Audited.
        """
    ),
    responses=problems(
        401,
        403,
        404,
        409,
        413,
        415,
        422,
        notes={
            409: "`idempotency-in-flight`: a request with this Idempotency-Key is still "
            "running; `upload-taken-over`: this upload stalled and a retry with its key took "
            "it over; `dispatch-policy-deleted` or `empty-lineup`: the dispatch has nothing "
            "it could send.",
            413: "For a JSON file the limit is 64 MiB; CSV streams without one.",
            415: "Send `text/csv` or `application/json`.",
            422: "`contact-file-refused`: nothing was stored (empty file, no header row, no "
            "column for the lineup's addresses or the fatigue UUID field, a column given "
            "twice; `expected_header` shows a header, `columns` what the header gave). "
            "`contact-file-unreadable`: the file could not be read to its end (bytes that "
            "are not UTF-8 after the header, a row over the size limit); the rows before the "
            "problem were stored and the failed batch is in the body. "
            "`idempotency-key-reused`: the key was used for another request.",
        },
        models={422: ContactFileProblem},
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "email,mobile,external_id,first_name\n"
                    "ann@example.com,+33612345678,c-1,Ann\n"
                    "not-an-email,,c-2,Bob\n",
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["contacts"],
                        "properties": {
                            "contacts": {
                                "type": "array",
                                "items": {"type": "object", "additionalProperties": True},
                                "description": "Contacts: `email` and/or `mobile`, optional "
                                "`external_id` and `time_zone`; other members are free "
                                "attributes.",
                            }
                        },
                    },
                    "example": {
                        "contacts": [
                            {
                                "email": "ann@example.com",
                                "mobile": "+33612345678",
                                "external_id": "c-1",
                                "first_name": "Ann",
                            },
                            {"email": "not-an-email", "external_id": "c-2", "first_name": "Bob"},
                        ]
                    },
                },
            },
        },
    },
)
async def post_contacts(
    account_id: str,
    dispatch_id: str,
    request: Request,
    actor: ConfigActor,
    idempotency_key: str | None = Header(default=None, max_length=200),
) -> JSONResponse:
    """Post contacts as `text/csv` (streamed; header row; columns email, mobile,
    external_id, time_zone, their aliases, and free attributes) or JSON
    `{"contacts": [...]}`; the answer's `columns` says how the columns were read.

    Rows are stored in chunks as they arrive (poll the batch meanwhile); bad rows are
    rejected one by one with row number and reason. A file that cannot give any contact
    (empty, no header row, no address column for the lineup, a column given twice) is
    refused before anything is stored (422 `contact-file-refused`, no batch). Replays with
    the same `Idempotency-Key` return the first answer and create nothing.
    """
    context = actor.context
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in ("text/csv", "application/json"):
        raise DomainError(
            detail="send contacts as text/csv or application/json",
            errors=[FieldError("Content-Type", "must be text/csv or application/json")],
            status=415,
            slug="unsupported-media-type",
            title="Unsupported media type",
        )
    target = await _target(context, account_id, dispatch_id)
    body = idempotency.HashingStream(request.stream(), f"{dispatch_id}\x00{media}")
    chunks = aiter(body)
    # A JSON document is parsed whole: read it first, so one over the limit is a 413
    # before anything is written. A file refused as a whole is refused before its batch.
    uuid_field = target.policy.uuid_field
    if media == "application/json":
        opened = open_json(await _read_json(chunks), target.channels, uuid_field)
    else:
        opened = await open_csv(chunks, target.channels, uuid_field)
    batch = batches.new_batch(
        context,
        new_id("bat"),
        account_id=account_id,
        dispatch_id=dispatch_id,
        media=media,
        now=target.received_at,
    )
    batch.column_report = opened.columns.model_dump(mode="json")

    def on_start(session: AsyncSession) -> None:
        actor.audit(
            session,
            "contacts.upload",
            "batch",
            batch.id,
            account_id=account_id,
            after={"dispatch": dispatch_id, "content_type": media},
        )

    stored_before = 0
    if idempotency_key:
        started = await idempotency.begin(
            context, account_id, idempotency_key, scope=body.scope, batch=batch, on_start=on_start
        )
        if isinstance(started, IdempotencyKey):
            await body.drain()
            code, stored = idempotency.check_replay(started, body.hexdigest())
            return JSONResponse(
                stored,
                status_code=code,
                headers={"Idempotent-Replayed": "true"},
                media_type="application/problem+json" if code >= 400 else "application/json",
            )
        stored_before = started
    else:
        async with context.sessions() as session, session.begin():
            session.add(batch)
            on_start(session)
    try:
        async with batches.heartbeat(context, batch.id):
            return await _ingest(
                context,
                batch.id,
                target,
                body,
                opened,
                stored_before,
                idempotency_key,
                request,
            )
    except BaseException:
        await idempotency.abandon(context, account_id, idempotency_key, batch.id)
        raise


async def _ingest(
    context: AppContext,
    batch_id: str,
    target: IngestTarget,
    body: idempotency.HashingStream,
    opened: ContactFile,
    stored_before: int,
    idempotency_key: str | None,
    request: Request,
) -> JSONResponse:
    """Store the file's rows (after the first `stored_before`, which an interrupted request
    with the same key stored), end the batch, and answer with its counts."""
    rows = opened.rows
    if stored_before:
        rows = batches.skip_rows(rows, stored_before)
    outcome, error = "completed", None  # error: what the batch keeps
    field, reason = "body", ""  # what the 422 names
    try:
        await ingest_stream(context, batch_id, target, rows)
    except CsvFormatError as exc:
        outcome, error = "failed", f"row {exc.row_number}: {exc.reason}"
        reason = error
    except batches.BatchTakenOver:
        raise
    except DomainError as exc:
        outcome, error = "failed", exc.detail
        first = exc.errors[0] if exc.errors else None
        field, reason = (first.field or "body", first.reason) if first else ("body", exc.detail)
    async with context.sessions() as session, session.begin():
        batch = await find_batch(session, batch_id, lock=True)
        assert batch is not None
        if batch.status != "processing":
            raise batches.BatchTakenOver()
        batch.status = outcome
        batch.error = error
        batch.finished_at = context.clock.now()
        batch.lease_until = None
        out = (await _batch_out(session, batch)).model_dump(mode="json")
    code = 202 if outcome == "completed" else 422
    if code == 422:
        out = _unreadable_file_problem(out, field, reason, request.url.path)
    if idempotency_key:
        account_id = target.dispatch.account_id
        await idempotency.finish(context, account_id, idempotency_key, body.hexdigest(), code, out)
    media_type = "application/json" if code == 202 else "application/problem+json"
    return JSONResponse(out, status_code=code, media_type=media_type)


def _unreadable_file_problem(
    batch: dict[str, Any], field: str, reason: str, instance: str
) -> dict[str, Any]:
    """The 422 for a file that could not be read to its end: a problem document that also
    carries the (failed) batch, since the rows before the problem were stored and counted."""
    return {
        "type": "urn:dispatch-engine:problem:contact-file-unreadable",
        "title": "Contact file unreadable",
        "status": 422,
        "detail": f"{field}: {reason}; rows before it were stored (see counts)",
        "instance": instance,
        "errors": [{"field": field, "reason": reason}],
        "field": field,
        "reason": reason,
        **{key: value for key, value in batch.items() if key != "status"},
        "batch_status": batch["status"],
    }


@router.get(
    "/batches/{batch_id}",
    response_model=BatchOut,
    summary="Get a contact file's batch",
    description=doc(
        """
        Status (`processing`, `completed`, `failed`, `interrupted`) and counts of a
        contact file, pollable while it uploads, with how its columns were read (`columns`)
        and its rejected rows (row number, field, reason) in pages: pass
        `next_rejected_after` back as `rejected_after`. A batch
        that carries on an interrupted upload names it in `resumed_from`. Any key that can
        see the account.
        """
    ),
    responses=problems(401, 404, 422),
)
async def get_batch(
    account_id: str,
    batch_id: str,
    actor: ReadActor,
    session: SessionDep,
    rejected_after: int = Query(
        default=0, ge=0, le=MAX_INT32, description="Row number to continue after"
    ),
    limit: int = Query(default=SAMPLE_REJECTIONS, ge=1, le=1000),
) -> BatchOut:
    """Status and counts of a contact file, with its rejected rows (paginated)."""
    async with session.begin():
        batch = await find_batch(session, batch_id)
        if batch is None or batch.account_id != account_id:
            raise NotFound(f"batch '{batch_id}'")
        return await _batch_out(session, batch, rejected_after, limit)
