"""The forecast domain's part of the Dagster code location: the forecast graph and its job."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from crypto_assets.forecast.assets import GROUP, build_forecast_assets
from crypto_assets.settings import Settings

FORECAST = AssetSelection.groups(GROUP)


def build_defs(settings: Settings) -> Definitions:
    forecast_job = define_asset_job(
        "forecast_graph",
        selection=FORECAST,
        description="forecast_metrics -> forecasts -> forecast_results for one symbol",
    )
    return Definitions(
        assets=build_forecast_assets(settings),
        jobs=[forecast_job],
        # The graph is a chain (each asset waits for the one before) and its steps parallelise internally
        # (Polars threads, the CV process pool), so a process per step would only add start-up time per run.
        executor=in_process_executor,
    )
