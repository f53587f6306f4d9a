"""`python -m dispatch_engine` and the `dispatch-engine` script: the CLI lives in `cli/`."""

from __future__ import annotations

from dispatch_engine.cli.main import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
