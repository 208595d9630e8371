"""The Dagster code location: every domain's assets, checks, jobs, schedules and sensors, built from the
project settings (resolved once per process). Each domain (batch with its exchange backfill and Spark engine,
forecast, speed, serving) builds its own ``Definitions``; they are merged here.

The speed layer (``streaming_sensor``) builds on the batch layer's shared pieces, so the batch package never
imports it: this composition root loads it by module name, like the CLI loads its commands.
"""

from __future__ import annotations

import importlib

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from crypto_assets.batch import defs as batch_defs
from crypto_assets.forecast.assets import build_forecast_assets
from crypto_assets.serving import defs as serving_defs
from crypto_assets.settings import Settings, load_settings

SPEED_LAYER_DEFS = "streaming_sensor.defs"


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    forecast_job = define_asset_job(
        "forecast_graph",
        selection=AssetSelection.groups("forecast"),
        description="forecast_metrics -> forecasts -> forecast_results for one symbol",
    )
    forecast = Definitions(
        assets=build_forecast_assets(settings),
        jobs=[forecast_job],
        # The graph is a chain (each asset waits for the one before) and its steps parallelise internally
        # (Polars threads, the CV process pool), so a process per step would only add start-up time per run.
        executor=in_process_executor,
    )
    speed = importlib.import_module(SPEED_LAYER_DEFS)
    domains = [batch_defs, speed, serving_defs]
    return Definitions.merge(forecast, *(module.build_defs(settings) for module in domains))


defs = build_definitions()
