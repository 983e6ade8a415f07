#!/usr/bin/env bash
# Set up a virtual environment from the repository's files and run every check:
# ruff, mypy --strict on everything that ships, the import-linter contracts of
# the layers (pyproject.toml), then the whole pytest suite (slow tests that start
# real Flower processes included). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Debian packages the tests start for real: installed when missing (as root, with apt).
need_package() {  # need_package PACKAGE WHY CHECK...
  local package=$1 why=$2
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing $package (Debian package)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    else
      echo "warning: $package is not installed; $why" >&2
    fi
  fi
}
# The deployment tests start a real nginx TLS front.
need_package nginx "the deployment tests will be skipped" \
  sh -c 'command -v nginx || test -x /usr/sbin/nginx'
# The SQL tests start a real PostgreSQL server on loopback.
need_package postgresql "the PostgreSQL tests will fail" \
  sh -c 'command -v initdb || ls /usr/lib/postgresql/*/bin/initdb'
export PATH="$PATH:/usr/sbin"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== import-linter (the layers of ARCHITECTURE.md)"
.venv/bin/lint-imports --no-cache
echo "== pytest"
# Two workers, one test file each at a time (the deployment tests share one
# module-scoped deployment): the deployment file waits on Flower's polling while
# the other worker runs the CPU-bound simulation tests.
.venv/bin/python -m pytest -n 2 --dist loadfile --durations=15 "$@"
