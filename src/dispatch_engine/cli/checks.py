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

from dispatch_engine.db.urls import describe_database, sqlite_file
from dispatch_engine.settings import Settings

__all__ = ["describe_store", "missing_sqlite_file", "require_free_port", "require_store", "say"]


def say(line: str) -> None:
    """One line on stderr, as it is (no markup, no wrapping: paths and URLs stay whole)."""
    typer.echo(line, err=True)


def describe_store(url: str) -> str:
    """The store, without secrets: `sqlite:////abs/path.db` (the file, absolute) or
    `postgresql://host:port/dbname` (never the user or password)."""
    return describe_database(url)


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist (None: it does, or not SQLite)."""
    path = sqlite_file(url)
    return None if path is None or path.exists() else path


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
