"""The Dagster code location: every domain's assets, checks, jobs, schedules and sensors, built from the
project settings. Each domain (batch, exchange backfill, Spark, forecast, speed, serving) builds its own
``Definitions``; they are merged here with the shared resources."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from crypto_assets.batch.assets import build_batch_assets
from crypto_assets.batch.backfill import defs as backfill_defs
from crypto_assets.forecast.assets import build_forecast_assets
from crypto_assets.resources import MarketDataResource
from crypto_assets.serving import defs as serving_defs
from crypto_assets.settings import Settings, load_settings
from crypto_assets.spark import defs as spark_defs
from streaming_sensor import defs as streaming_defs


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    batch_assets = build_batch_assets(settings)
    batch_job = define_asset_job(
        "batch_graph",
        selection=AssetSelection.groups("batch"),
        description="minute_raw -> daily_raw -> daily_filled -> prophet_input for a range of months",
    )
    forecast_assets = build_forecast_assets(settings)
    forecast_job = define_asset_job(
        "forecast_graph",
        selection=AssetSelection.groups("forecast"),
        description="forecast_metrics -> forecasts -> forecast_results for one symbol",
    )
    core = Definitions(
        assets=[*batch_assets, *forecast_assets],
        jobs=[batch_job, forecast_job],
        resources={"market": MarketDataResource(home=str(settings.home))},
        # The graph is a chain (each asset waits for the one before) and its steps parallelise internally
        # (Polars threads, the CV process pool), so a process per step would only add start-up time per run.
        executor=in_process_executor,
    )
    domains = [module.build_defs(settings) for module in (backfill_defs, spark_defs, streaming_defs, serving_defs)]
    return Definitions.merge(core, *domains)


defs = build_definitions()
