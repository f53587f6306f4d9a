"""Exceptions described for logs without their values.

An exception's message may quote what the code was handling: SQLAlchemy's
``StatementError`` prints the statement's parameters, a DBAPI error repeats the row
("Key (recipient)=(…) already exists"), a ``KeyError`` shows its key. Any of these can be
personal data, so logs name the exception types (the whole ``__cause__``/``__context__``
chain, a DBAPI error's original type) and where it was raised (file, line, function), never
a message, a parameter or a local variable.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

__all__ = [
    "SafeExceptionFormatter",
    "describe_exception",
    "render_exc_info",
    "safe_traceback",
]

# Frames kept at the end of a traceback: where it went wrong, not how the request got there.
MAX_FRAMES = 12
MAX_CHAIN = 5


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (explicit or implicit), outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < MAX_CHAIN:
        seen.append(current)
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__
    return seen


def _original(exc: BaseException) -> BaseException | None:
    """The DBAPI error a SQLAlchemy ``StatementError`` wraps (``.orig``), if any."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else None


def _frames(tb: TracebackType | None) -> list[str]:
    return [
        f"{frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(tb)[-MAX_FRAMES:]
    ]


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """Log fields for ``exc``: ``error_type``, ``error_chain`` and ``error_at`` (the frame
    that raised it). Safe to log: no message, parameter or local value is included."""
    chain = []
    for link in _chain(exc):
        chain.append(_type_name(link))
        orig = _original(link)
        if orig is not None:
            chain.append(_type_name(orig))
    frames = _frames(exc.__traceback__)
    return {
        "error_type": type(exc).__name__,
        "error_chain": chain,
        "error_at": frames[-1] if frames else None,
    }


def safe_traceback(exc: BaseException) -> str:
    """A traceback's shape (frames and exception types), values and messages left out."""
    lines = ["Traceback (most recent call last; messages and values omitted):"]
    lines.extend(f"  {frame}" for frame in _frames(exc.__traceback__))
    lines.append(" <- ".join(describe_exception(exc)["error_chain"]))
    return "\n".join(lines)


def render_exc_info(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor replacing ``format_exc_info``: an ``exc_info`` becomes the fields
    of :func:`describe_exception` and a ``traceback`` without values."""
    exc_info = event_dict.pop("exc_info", None)
    exc: BaseException | None = None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
    elif exc_info:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict.update(describe_exception(exc))
        event_dict["traceback"] = safe_traceback(exc)
    return event_dict


class SafeExceptionFormatter(logging.Formatter):
    """stdlib formatter for records with ``exc_info`` (uvicorn's "Exception in ASGI
    application", APScheduler's job errors): the traceback without messages or values."""

    def format(self, record: logging.LogRecord) -> str:
        """Always render the exception here: another handler may have cached a full
        traceback in ``record.exc_text``."""
        cached, record.exc_text = record.exc_text, None
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatException(self, ei: Any) -> str:
        exc = ei[1] if isinstance(ei, tuple) else None
        if not isinstance(exc, BaseException):
            return "(exception details omitted)"
        return safe_traceback(exc)

    def formatStack(self, stack_info: str) -> str:
        return stack_info  # a stack without exception: code locations only
