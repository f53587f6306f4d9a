"""Exceptions are logged by type and place, never with their messages (they can hold PII)."""

from __future__ import annotations

import logging
import sys

from sqlalchemy.exc import IntegrityError

from dispatch_engine.observability.safe_errors import (
    SafeExceptionFormatter,
    describe_exception,
    render_exc_info,
)

ADDRESS = "ann.private@example.com"


def _raised() -> BaseException:
    try:
        try:
            raise KeyError(ADDRESS)
        except KeyError:
            raise IntegrityError(
                "INSERT INTO t (a) VALUES (?)", {"a": ADDRESS}, Exception(f"dup {ADDRESS}")
            ) from None
    except IntegrityError as exc:
        return exc


def test_describe_names_the_types_and_the_place_only() -> None:
    described = describe_exception(_raised())
    assert described["error_type"] == "IntegrityError"
    assert described["error_chain"] == ["sqlalchemy.exc.IntegrityError", "Exception"]
    assert "test_safe_errors.py" in described["error_at"]
    assert ADDRESS not in str(described)


def test_the_stdlib_formatter_ignores_a_traceback_cached_by_another_handler() -> None:
    exc = _raised()
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "boom", None, None)
    record.exc_info = (type(exc), exc, exc.__traceback__)
    record.exc_text = f"Traceback … {ADDRESS}"  # as logging.Formatter would have cached it
    text = SafeExceptionFormatter("%(message)s").format(record)
    assert "sqlalchemy.exc.IntegrityError" in text
    assert ADDRESS not in text
    assert record.exc_text == f"Traceback … {ADDRESS}"  # the other handler's cache is kept


def test_the_structlog_processor_replaces_exc_info() -> None:
    exc = _raised()
    event = render_exc_info(None, "error", {"event": "x", "exc_info": exc})
    assert "exc_info" not in event
    assert event["error_type"] == "IntegrityError"
    assert ADDRESS not in str(event)
    try:
        raise exc
    except IntegrityError:
        event = render_exc_info(None, "error", {"event": "x", "exc_info": True})
        assert sys.exc_info()[1] is exc
    assert event["error_type"] == "IntegrityError" and ADDRESS not in str(event)
