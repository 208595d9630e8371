"""The Dagster code location: every domain's assets, checks, jobs, schedules and sensors, built from the
project settings (resolved once per process). Each domain (batch with its exchange backfill, the batch engine
(Polars or Spark), forecast, speed, serving) builds its own ``Definitions``; they are merged here.

The speed layer (``streaming_sensor``) builds on the batch layer's shared pieces, so the batch package never
imports it: this composition root loads it by module name, like the CLI loads its commands.
"""

from __future__ import annotations

import importlib

from dagster import Definitions

from crypto_assets.batch import defs as batch_defs
from crypto_assets.forecast import defs as forecast_defs
from crypto_assets.serving import defs as serving_defs
from crypto_assets.settings import Settings, load_settings
from crypto_assets.spark import defs as engine_defs

SPEED_LAYER_DEFS = "streaming_sensor.defs"


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    domains = [batch_defs, engine_defs, forecast_defs]
    if not settings.remote_lake:
        # The speed and serving layers append to lake files in place, which object storage cannot do.
        domains += [importlib.import_module(SPEED_LAYER_DEFS), serving_defs]
    return Definitions.merge(*(module.build_defs(settings) for module in domains))


defs = build_definitions()
