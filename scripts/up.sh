#!/usr/bin/env bash
# Install, then run the whole system on the embedded defaults (crypto-assets up): the replay exchange, the
# Kafka-compatible broker, the producer and the Spark stream, one run of the batch graph, and the Dagster
# webserver and daemon with the unified_view sensor on; UI on http://127.0.0.1:3000. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/crypto-assets up "$@"
