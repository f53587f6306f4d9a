.PHONY: run test lint bench-smoke

run:  ## install (first time) and start on the embedded default
	scripts/run.sh

test:  ## install (first time) and run the whole test suite
	scripts/test.sh

lint:
	scripts/bootstrap.sh
	.venv/bin/ruff check src tests bench migrations
	.venv/bin/ruff format --check src tests bench migrations
	.venv/bin/mypy
	.venv/bin/lint-imports --no-logo
