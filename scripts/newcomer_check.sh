#!/usr/bin/env bash
# Newcomer check (CI step): clone the repository fresh, run the README's demo command exactly as written, and check
# that the report, its plots and the printed summary agree. The test command is what CI itself runs.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/immunoguide"
cd "$work/immunoguide"
cmd="$(python3 scripts/readme_command.py demo)"
echo "newcomer: $cmd"
start=$(date +%s)
COLUMNS=160 bash -c "$cmd" | tee demo_output.txt
echo "newcomer: demo command took $(( $(date +%s) - start )) s"
.venv/bin/python scripts/check_demo_output.py immunoguide-demo demo_output.txt
