#!/usr/bin/env bash
# Install with the test extras and run the test suite: everything, or with --quick only the unit tier (no
# process, JVM or server; see crypto_assets_tests/tiers.py). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec .venv/bin/python -m pytest "$@"
