#!/usr/bin/env bash
# Install, materialize the batch graph on the embedded default data, then serve the Dagster UI
# (webserver and daemon) on http://127.0.0.1:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/crypto-assets demo --serve "$@"
