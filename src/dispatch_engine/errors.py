"""Domain errors. One handler (api/problems.py) turns them into RFC 9457 problem+json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


@dataclass
class DomainError(Exception):
    """Base of every error a caller may see; `slug` is the stable problem type."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __str__(self) -> str:
        return self.detail


class ValidationFailed(DomainError):
    def __init__(self, field_name: str, reason: str, **extra: Any) -> None:
        super().__init__(
            detail=f"{field_name}: {reason}",
            errors=[FieldError(field_name, reason)],
            extra=extra,
            status=422,
            slug="validation-error",
            title="Request validation failed",
        )


class InvalidFields(DomainError):
    """Several fields refused at once (each with its reason), as one 422 problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(
            detail="; ".join(f"{e.field}: {e.reason}" for e in errors),
            errors=errors,
            status=422,
            slug="validation-error",
            title="Request validation failed",
        )


class PayloadTooLarge(DomainError):
    def __init__(self, limit: int, hint: str = "") -> None:
        reason = f"request bodies are limited to {limit} bytes" + (f"; {hint}" if hint else "")
        super().__init__(
            detail=f"body: {reason}",
            errors=[FieldError("body", reason)],
            status=413,
            slug="payload-too-large",
            title="Payload too large",
        )


class NotFound(DomainError):
    def __init__(self, what: str) -> None:
        super().__init__(
            detail=f"{what} not found", status=404, slug="not-found", title="Not found"
        )


class Conflict(DomainError):
    def __init__(
        self, detail: str, *, slug: str = "conflict", field_name: str | None = None, **extra: Any
    ) -> None:
        errors = [FieldError(field_name, detail)] if field_name else []
        super().__init__(
            detail=detail, errors=errors, extra=extra, status=409, slug=slug, title="Conflict"
        )


class PreconditionFailed(DomainError):
    def __init__(self, current_version: int) -> None:
        super().__init__(
            detail=f'the resource changed; its current ETag is "{current_version}"',
            errors=[FieldError("If-Match", "does not match the current ETag")],
            extra={"current_version": current_version},
            status=412,
            slug="precondition-failed",
            title="Precondition failed",
        )


class Unauthenticated(DomainError):
    def __init__(self, detail: str = "a valid API key is required") -> None:
        super().__init__(
            detail=detail,
            errors=[FieldError("Authorization", detail)],
            status=401,
            slug="unauthenticated",
            title="Unauthenticated",
        )


class Forbidden(DomainError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail, status=403, slug="forbidden", title="Forbidden")
