#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with EdgeLoop installed.
#   scripts/bootstrap.sh          runtime only (for `make up`)
#   scripts/bootstrap.sh dev      plus test tools and the browser the dashboard tests drive
#   scripts/bootstrap.sh bench    plus the ThingsBoard IoT Gateway for `edgeloop bench edge`, in .venv-tb
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-runtime}"
python="${PYTHON:-python3}"

if [ "$want" = bench ]; then
    # EdgeLoop itself (unless a dev install is there already), then the gateway we compare against in its own
    # venv: its pinned dependencies conflict with ours. Pins: bench/thingsboard/requirements.txt.
    [ -f .venv/.installed-dev ] || "$0" runtime
    if [ ! -x .venv-tb/bin/python ]; then
        echo "==> creating virtual environment in .venv-tb (ThingsBoard IoT Gateway, for bench edge)"
        "$python" -m venv .venv-tb
    fi
    stamp=".venv-tb/.installed"
    digest=$(sha256sum bench/thingsboard/requirements.txt | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        echo "==> installing thingsboard-gateway into .venv-tb (pinned in bench/thingsboard/requirements.txt)"
        .venv-tb/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
        .venv-tb/bin/python -m pip install --quiet --disable-pip-version-check -r bench/thingsboard/requirements.txt
        echo "$digest" > "$stamp"
    fi
    exit 0
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "EdgeLoop needs Python 3.11 or newer ($python is $("$python" --version 2>&1))." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> creating virtual environment in .venv"
    "$python" -m venv .venv
fi

extra=""
[ "$want" = dev ] && extra="[dev]"
stamp=".venv/.installed-$want"
digest=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "==> installing edgeloop$extra into .venv (pinned versions from pyproject.toml)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extra"
    echo "$digest" > "$stamp"
fi

if [ "$want" = dev ] && ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for the dashboard browser tests"
    if [ "$(id -u)" -ne 0 ]; then
        echo "chromium is missing and this user cannot apt-get install it; run: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
