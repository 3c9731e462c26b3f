#!/usr/bin/env bash
# The front door: install the project, then
#   scripts/quickstart.sh        run every sandbox configured model through the job (local Dagster instance)
#   scripts/quickstart.sh ui     open the same setup in the Dagster UI (dagster dev) on http://127.0.0.1:3000
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
exec .venv/bin/python scripts/quickstart.py "${1:-run}"
