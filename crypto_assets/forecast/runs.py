"""Materialize the forecast graph for the symbols whose daily history is long enough for its cross-validation;
used by ``crypto-assets demo`` (and so ``up``) after the batch graph."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance, materialize

from crypto_assets.asset_names import FORECAST_METRICS, FORECAST_RESULTS, FORECASTS
from crypto_assets.dagster_home import sigterm_kept
from crypto_assets.forecast import defs as forecast_defs
from crypto_assets.forecast.options import DEFAULT_OPTIONS
from crypto_assets.forecast.store import read_history
from crypto_assets.resources import MarketDataResource
from crypto_assets.settings import Settings


@dataclass(frozen=True)
class ForecastRun:
    symbol: str
    days: int
    success: bool | None  # None: not run
    note: str
    checks: tuple[tuple[str, bool], ...] = ()


def days_needed() -> int:
    """The shortest history the forecast graph runs on (ForecastOptions.min_history_days); a history shorter than a
    full year of weekly origins still runs, with fewer origins."""
    return DEFAULT_OPTIONS.min_history_days()


def materialize_forecasts(
    instance: DagsterInstance, settings: Settings, config: dict | None = None, log_level: str = "INFO"
) -> list[ForecastRun]:
    """One run per symbol with enough history; ``config`` is ForecastConfig run config for both CV assets."""
    defs = forecast_defs.build_defs(settings)
    # The forecast assets read the batch view from the lake; prophet_input and daily_filled are deps, not inputs.
    resources = {"market": MarketDataResource.for_settings(settings)}
    runs = []
    for symbol in settings.symbol_names:
        try:
            days = read_history(settings.lake_dir, symbol).height
        except ValueError:
            days = 0
        if days < days_needed():
            runs.append(
                ForecastRun(symbol, days, None, f"{days} days of history; cross-validation needs {days_needed()}")
            )
            continue
        with sigterm_kept():
            result = materialize(
                list(defs.assets),
                selection=forecast_defs.FORECAST,
                partition_key=symbol,
                instance=instance,
                resources=resources,
                run_config={
                    "loggers": {"console": {"config": {"log_level": log_level}}},
                    **({"ops": {name: {"config": config} for name in (FORECASTS, FORECAST_METRICS)}} if config else {}),
                },
                raise_on_error=False,
            )
        checks = tuple((e.check_name, e.passed) for e in result.get_asset_check_evaluations())
        materialized = bool(result.asset_materializations_for_node(FORECAST_RESULTS))
        note = (
            "run FAILED"
            if not result.success
            else "run succeeded"
            if materialized
            else "skipped by forecast_metrics (see the run's log)"
        )
        runs.append(ForecastRun(symbol, days, result.success, note, checks))
    return runs
