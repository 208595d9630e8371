"""How the routine runs that refresh ``unified_view`` are told apart: the sensors that request them (Dagster
tags each run with ``dagster/sensor_name``) and the tag of the speed layer's runs. The speed layer's sensor,
the serving layer's automation sensor and the run-retention job all read these names from here, so the batch
package never needs the speed layer to know them."""

from __future__ import annotations

SPEED_REFRESH_SENSOR = "unified_view_on_new_microbatches"  # streaming_sensor.sensor: after new micro-batches
AUTOMATION_SENSOR = "unified_view_on_batch_updates"  # serving.defs: after batch updates
REFRESH_SENSORS = (SPEED_REFRESH_SENSOR, AUTOMATION_SENSOR)
# Tag of every run the speed layer's sensor requests, so the Runs page can show or hide them in one click.
REFRESH_TAG = ("crypto-assets/refresh", "speed")
SENSOR_NAME_TAG = "dagster/sensor_name"  # Dagster's own tag on every run a sensor requests
# A refresh takes seconds. One whose run worker died (e.g. its code server was killed mid-run) would stay
# STARTED for ever and hold the next refresh back: Dagster's run monitoring fails it after this long (its
# documented ``dagster/max_runtime`` tag), and the speed sensor stops waiting for it then too.
REFRESH_MAX_RUNTIME_SECONDS = 300
REFRESH_RUN_TAGS = {"dagster/max_runtime": str(REFRESH_MAX_RUNTIME_SECONDS)}
