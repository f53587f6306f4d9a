"""The persistence rule of docs/architecture.md, checked on the source: above `store/`,
`db/` and `models/`, no code runs a statement itself (import-linter checks the imports;
this checks the calls, which an import of a session type would not reveal)."""

from __future__ import annotations

import ast
from pathlib import Path

import dispatch_engine

PACKAGE = Path(dispatch_engine.__file__).parent
PERSISTENCE = {"store", "db", "models"}
STATEMENT_CALLS = {"execute", "scalar", "scalars", "stream", "stream_scalars", "get", "run_sync"}
SESSION_NAMES = ("session", "conn", "connection")


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _statement_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in STATEMENT_CALLS:
            continue
        receiver = _receiver_name(node.func.value).lower()
        if receiver.endswith(SESSION_NAMES):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {receiver}.{node.func.attr}()")
    return found


def test_no_statement_runs_above_the_store() -> None:
    offenders = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in PERSISTENCE
        for hit in _statement_calls(path)
    ]
    assert offenders == [], (
        "queries belong in a named function in store/ (or db/ when they differ by "
        "database); see docs/architecture.md:\n" + "\n".join(offenders)
    )
