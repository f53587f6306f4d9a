"""Which store a command uses, said on stderr, and the refusal to make one by accident.

A SQLite store is a file; by default `dispatch-engine.db` in `DISPATCH_DATA_DIR`, itself
`./.dispatch-engine` relative to the current directory (SPEC §7). Run from another
directory, a command would find no file there and SQLite would create an empty one: a
store the server never sees (an API key it rejects, an empty queue). So every command says
which store it uses, and only `migrate` and `serve` create a SQLite file that is missing.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dispatch_engine.settings import Settings

__all__ = ["describe_store", "missing_sqlite_file", "require_free_port", "require_store", "say"]

_DEFAULT_PG_PORT = 5432


def say(line: str) -> None:
    """One line on stderr, as it is (no markup, no wrapping: paths and URLs stay whole)."""
    typer.echo(line, err=True)


def describe_store(url: str) -> str:
    """The store, without secrets: `sqlite:////abs/path.db` (the file, absolute) or
    `postgresql://host:port/dbname` (never the user or password)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(DISPATCH_DATABASE_URL is not a database URL)"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            return "sqlite:// (in memory)"
        return f"sqlite:///{Path(database).expanduser().resolve()}"
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):  # several hosts given in the query
        host = ",".join(host)
    port = parsed.port or _DEFAULT_PG_PORT
    if host.startswith("/"):  # a Unix-domain socket directory
        return f"{backend}://localhost:{port}/{parsed.database or ''} (socket in {host})"
    return f"{backend}://{host}:{port}/{parsed.database or ''}"


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist (None: it does, or not SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve()
    return None if path.exists() else path


def require_store(settings: Settings) -> None:
    """Exit (1) with what to do when the SQLite store the settings name does not exist."""
    path = missing_sqlite_file(settings.effective_database_url)
    if path is None:
        return
    if settings.database_url:
        origin = "the SQLite file DISPATCH_DATABASE_URL names"
    else:
        origin = (
            f"the default: dispatch-engine.db in DISPATCH_DATA_DIR={settings.data_dir}"
            + ("" if settings.data_dir.is_absolute() else ", relative to the current directory")
            + "; DISPATCH_DATABASE_URL is not set"
        )
    say(f"error: no store at {path} ({origin}).")
    say(
        "Run this command with the same DISPATCH_DATA_DIR / DISPATCH_DATABASE_URL (or from "
        "the same directory) as `dispatch-engine serve`, or create the store with "
        "`dispatch-engine migrate`."
    )
    raise typer.Exit(1)


def require_free_port(host: str, port: int, setting: str) -> None:
    """Exit (1) with the setting to change when `host:port` cannot be listened on (a port
    in use, an address not of this machine), instead of the server's raw `Errno 98`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            say(
                f"error: port {port} on {host} is already in use (another dispatch-engine, "
                f"or another server?). Stop it, or choose another port with {setting}."
            )
        else:
            reason = exc.strerror or type(exc).__name__
            say(
                f"error: cannot listen on {host}:{port} ({reason}). "
                f"Check DISPATCH_HOST and {setting}."
            )
        raise typer.Exit(1) from None
