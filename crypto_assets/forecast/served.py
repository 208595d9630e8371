"""The forecast from the last day of history: every candidate's path with its conformal bands, the champion
per horizon marked `served`. Used by the `forecasts` asset and the `forecast` command alike."""

from __future__ import annotations

import numpy as np
import polars as pl

from crypto_assets.forecast.candidates import candidate_paths
from crypto_assets.forecast.cross_validation import interval_scales
from crypto_assets.forecast.evaluation import bands, level_tag, served_models
from crypto_assets.forecast.history import to_series
from crypto_assets.forecast.options import ForecastOptions


def band_columns(options: ForecastOptions) -> list[str]:
    return [f"{side}_{level_tag(lv)}" for lv in options.interval_levels for side in ("lower", "upper")]


def forecast_schema(options: ForecastOptions) -> dict[str, pl.DataType]:
    return {
        "symbol": pl.String,
        "model": pl.String,
        "served": pl.Boolean,
        "horizon": pl.Int32,
        "ds": pl.Date,
        "yhat": pl.Float64,
        **{c: pl.Float64 for c in band_columns(options)},
    }


def paths_with_bands(
    symbol: str,
    last_day: np.datetime64,
    paths: dict[str, np.ndarray],
    scale: np.ndarray,
    metrics: pl.DataFrame,
    options: ForecastOptions,
) -> pl.DataFrame:
    """Long rows (model, day ahead) with bands from the metrics' conformal quantiles at this origin's scale."""
    served = served_models(metrics)
    hs = np.arange(1, options.horizon_days + 1)
    frames = []
    for model, yhat in paths.items():
        q = metrics.filter(pl.col("model") == model).sort("horizon")
        columns = {}
        for lv in options.interval_levels:
            quantile = q[f"q_{level_tag(lv)}"].to_numpy() if q.height == len(hs) else np.full(len(hs), np.nan)
            lower, upper = bands(yhat, scale, quantile)
            columns[f"lower_{level_tag(lv)}"], columns[f"upper_{level_tag(lv)}"] = lower, upper
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "model": model,
                    "served": [served.get(int(h)) == model for h in hs],
                    "horizon": hs,
                    "ds": np.datetime64(last_day, "D") + hs,
                    "yhat": yhat,
                    **columns,
                },
                schema=forecast_schema(options),
            ).with_columns(pl.exclude("symbol", "model", "served", "horizon", "ds").fill_nan(None))
        )
    return pl.concat(frames)


def forecast_all(
    history: pl.DataFrame, metrics: pl.DataFrame, options: ForecastOptions
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Fit every candidate on the whole history and forecast horizon_days; returns the rows and model errors."""
    series = to_series(history, require_positive=options.log_price)
    paths, errors = candidate_paths(series.ds, series.y, options)
    scale = interval_scales(series.ds, series.y, np.array([len(series.y) - 1]), options)[0]
    return paths_with_bands(series.symbol, series.ds[-1], paths, scale, metrics, options), errors


def served_path(forecasts: pl.DataFrame) -> pl.DataFrame:
    """The served forecast: one row per day ahead, from the champion of its horizon."""
    return forecasts.filter(pl.col("served")).sort("horizon")
