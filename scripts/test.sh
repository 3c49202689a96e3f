#!/usr/bin/env bash
# Install everything the tests need, then run them (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check src tests bench
.venv/bin/mypy  # type hints of the whole package (config in pyproject.toml)
exec .venv/bin/python -m pytest -q "$@"
