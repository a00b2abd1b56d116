#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine and runs it.
# System packages: PostgreSQL (store tests), Chromium (browser tests), poppler (PDF checks), Pango (weasyprint).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="postgresql chromium chromium-driver poppler-utils libpango-1.0-0 libpangoft2-1.0-0"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null
  else
    echo "note: system packages missing ($missing); tests that need them will be skipped" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -r requirements-spark.txt -c constraints.txt
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .

.venv/bin/lint-imports --no-cache --no-logo  # import contracts of .importlinter (also tests/test_architecture.py)
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
