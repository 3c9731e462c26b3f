#!/usr/bin/env bash
# The front door: install the project, then
#   scripts/quickstart.sh        run every sandbox configured model through the job (local Dagster instance)
#   scripts/quickstart.sh ui     open the same setup in the Dagster UI (dagster dev) on http://127.0.0.1:3000
#                                (QUICKSTART_UI_PORT to change the port); Ctrl-C or SIGTERM stops it cleanly
# Packages are installed into .venv on the first start and again only when pyproject.toml changes
# (its hash is kept in .venv/.quickstart-installed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${QUICKSTART_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.quickstart-installed"
wanted="$("$venv/bin/python" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  echo "Installing into $venv (first start, or pyproject.toml changed) ..."
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -e '.[test]'
  echo "$wanted" > "$stamp"
fi
exec "$venv/bin/python" scripts/quickstart.py "${1:-run}"
