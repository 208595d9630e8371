#!/usr/bin/env bash
# Install the Debian packages the project needs, create .venv (Python 3.11 or 3.12) and install the project
# into it; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
bash scripts/system-packages.sh "$extras"
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
