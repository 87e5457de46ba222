#!/usr/bin/env bash
# The whole test suite: set-up, lint, type check, tests (real PostgreSQL, Mosquitto, Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
echo "==> ruff"
.venv/bin/ruff check src tests bench
echo "==> mypy --strict"
.venv/bin/mypy
echo "==> pytest"
exec .venv/bin/pytest "$@"
