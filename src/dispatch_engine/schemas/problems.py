"""The error body of every 4xx and 5xx answer, as api/problems.py builds it: RFC 9457
problem details (`application/problem+json`). These models document it in the OpenAPI;
the answers themselves are built by api/problems.py, and tests/api/test_openapi.py checks
real answers against them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from dispatch_engine.schemas.contacts import ColumnsOut, RejectedRowOut


class ProblemFieldError(BaseModel):
    field: str = Field(
        description="What the error is about: a body field, dotted for nested ones "
        "(`lineup.1.delay`), a query or path parameter, a header as the client writes it "
        "(`Idempotency-Key`, `If-Match`, `Authorization`), or `body` for the body as a whole.",
        examples=["lineup.1.delay"],
    )
    reason: str = Field(
        examples=[
            "message 2 must be sent between 1 hour and 30 days after the previous message; "
            "got 10 minutes"
        ]
    )


class Problem(BaseModel):
    """RFC 9457 problem details. `type` is stable (`urn:dispatch-engine:problem:<slug>`);
    `detail` is for people. Some problem types add members of their own (listed below,
    present only for those types); clients should ignore members they do not know."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:dispatch-engine:problem:validation-error",
                    "title": "Request validation failed",
                    "status": 422,
                    "detail": "token_validity: Field required",
                    "instance": "/v1/accounts/acme/dispatches",
                    "errors": [{"field": "token_validity", "reason": "Field required"}],
                    "field": "token_validity",
                    "reason": "Field required",
                }
            ]
        },
    )

    type: str = Field(
        description="`urn:dispatch-engine:problem:<slug>`, e.g. `validation-error`, "
        "`unauthenticated`, `forbidden`, `not-found`, `precondition-failed`, "
        "`payload-too-large`, `unsupported-media-type`, or a conflict's own slug "
        "(`account-exists`, `queue-integration-required`, `illegal-transition`, …).",
        examples=["urn:dispatch-engine:problem:validation-error"],
    )
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.", examples=[422])
    detail: str = Field(description="What went wrong in this request, in plain words.")
    instance: str = Field(description="The request path.", examples=["/v1/accounts/acme"])
    errors: list[ProblemFieldError] | None = Field(
        default=None,
        description="Each field refused and why (absent when the problem is about no field).",
    )
    field: str | None = Field(
        default=None, description="The first error's `field` (present with `errors`)."
    )
    reason: str | None = Field(
        default=None, description="The first error's `reason` (present with `errors`)."
    )
    current_version: int | None = Field(
        default=None,
        description="`precondition-failed` (412): the resource's current version (its ETag "
        "is that number in quotes).",
    )
    pause: str | None = Field(
        default=None, description="`already-paused` (409): the pause already in force."
    )
    missing_templates: list[str] | None = Field(
        default=None,
        description="`dispatch-not-resumable` (409): lineup message ids without a template.",
    )
    current_state: str | None = Field(
        default=None, description="`illegal-transition` (409): the incident's state."
    )
    allowed: list[str] | None = Field(
        default=None,
        description="`illegal-transition` (409): the states the incident may move to.",
    )
    token_validity_seconds: int | None = Field(
        default=None, description="`token-validity-too-short` (422): the validity asked for."
    )
    total_delay_seconds: int | None = Field(
        default=None,
        description="`token-validity-too-short` (422): the lineup's total delay in seconds, "
        "a calendar day counted as 24 hours.",
    )
    total_delay: str | None = Field(
        default=None,
        description="`token-validity-too-short` (422): the same as an ISO 8601 duration.",
    )
    error_type: str | None = Field(
        default=None,
        description="`internal-error` (500): the type of the unexpected error (never its message).",
    )
    request_id: str | None = Field(
        default=None, description="`internal-error` (500): the request id in the logs."
    )


class ContactFileProblem(Problem):
    """A contact upload's 422. For `contact-file-unreadable` (the file could not be read to
    its end) it also carries the failed batch: the rows before the problem were stored and
    are counted. `contact-file-refused` (nothing stored, no batch: an empty file, no header,
    no column for the lineup's addresses or the fatigue UUID field, a column given twice)
    carries `expected_header`, and `columns` once the header was read. A reused
    Idempotency-Key is a plain problem."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:dispatch-engine:problem:contact-file-unreadable",
                    "title": "Contact file unreadable",
                    "status": 422,
                    "detail": "body: row 4: the file is not valid UTF-8; rows before it "
                    "were stored (see counts)",
                    "instance": "/v1/accounts/acme/dispatches/dsp_01hx/contacts",
                    "errors": [{"field": "body", "reason": "row 4: the file is not valid UTF-8"}],
                    "field": "body",
                    "reason": "row 4: the file is not valid UTF-8",
                    "batch": "bat_01hx",
                    "dispatch": "dsp_01hx",
                    "counts": {"rows": 2, "accepted": 2, "rejected": 0, "duplicates": 0},
                    "error": "row 4: the file is not valid UTF-8",
                    "created_at": "2026-03-02T09:00:00Z",
                    "finished_at": "2026-03-02T09:00:01Z",
                    "resumed_from": None,
                    "rejected_rows": [],
                    "next_rejected_after": None,
                    "batch_status": "failed",
                }
            ]
        }
    )

    batch: str | None = Field(default=None, description="The batch id (poll it).")
    dispatch: str | None = None
    counts: dict[str, int] | None = Field(
        default=None, description="rows, accepted, rejected, duplicates: up to the problem."
    )
    error: str | None = Field(default=None, description="What the batch records as its error.")
    created_at: datetime | None = None
    finished_at: datetime | None = None
    resumed_from: str | None = None
    rejected_rows: list[RejectedRowOut] | None = None
    next_rejected_after: int | None = None
    batch_status: str | None = Field(default=None, description="`failed`.")
    expected_header: str | None = Field(
        default=None,
        description="`contact-file-refused`: a header row the service reads.",
        examples=["external_id,email,mobile,time_zone"],
    )
    columns: ColumnsOut | None = Field(
        default=None, description="`contact-file-refused`: what the file's header gave."
    )
