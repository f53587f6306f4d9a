#!/usr/bin/env python3
"""Write the OpenAPI document to docs/openapi.json (sorted keys, two-space indents).

    .venv/bin/python scripts/openapi.py           # regenerate after changing the API
    .venv/bin/python scripts/openapi.py --check   # exit 1 when the file is out of date

The document is the EM team's contract; tests/api/test_openapi.py fails when the committed
file differs from what the code serves at /openapi.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dispatch_engine.api.app import openapi_document
from dispatch_engine.api.openapi import render

TARGET = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    text = render(openapi_document())
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != text:
            print(f"{TARGET} is out of date: run .venv/bin/python scripts/openapi.py")
            return 1
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET}")
    else:
        print(f"{TARGET} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
