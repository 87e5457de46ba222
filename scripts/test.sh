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
# Two workers, each taking whole files (a file's fixtures and its order stay together): most tests wait on
# brokers, databases, browsers and real time, so two run side by side on two cores (about 11 min instead of 20).
exec .venv/bin/pytest -n 2 --dist loadfile "$@"
