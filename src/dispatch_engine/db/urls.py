"""What a database URL names, for people: the store a command uses, without its secrets."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["describe_database", "sqlite_file"]

_DEFAULT_PG_PORT = 5432


def describe_database(url: str) -> str:
    """`sqlite:////abs/path.db` (the file, absolute) or `postgresql://host:port/dbname`:
    never the user or password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(DISPATCH_DATABASE_URL is not a database URL)"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_file(url)
        return "sqlite:// (in memory)" if path is None else f"sqlite:///{path}"
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):  # several hosts given in the query
        host = ",".join(host)
    port = parsed.port or _DEFAULT_PG_PORT
    if host.startswith("/"):  # a Unix-domain socket directory
        return f"{backend}://localhost:{port}/{parsed.database or ''} (socket in {host})"
    return f"{backend}://{host}:{port}/{parsed.database or ''}"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, absolute (relative paths resolve against the current
    directory, as SQLite does); None for another database or an in-memory one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()
