"""The forecast assets: prophet_input -> forecasts, forecast_metrics -> forecast_results (group ``forecast``).

Partitioned by symbol; each run reads the symbol's whole history (every month of prophet_input, hence
AllPartitionMapping). Thin wrappers: the modelling, CV, metrics, checks, tables and charts live in the pure
modules of :mod:`crypto_assets.forecast`; these read, call, write atomically and report.
"""

from pathlib import Path

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from crypto_assets.batch.metadata import markdown_table, to_check_result
from crypto_assets.batch.pipeline import DAILY_FILLED, PROPHET_INPUT
from crypto_assets.forecast import checks
from crypto_assets.forecast.charts import metrics_markdown, write_forecast_chart
from crypto_assets.forecast.config import ForecastConfig
from crypto_assets.forecast.cross_validation import PROPHET, cross_validate
from crypto_assets.forecast.model import forecast
from crypto_assets.forecast.preview import markdown_image, preview_png
from crypto_assets.forecast.results import actual_vs_predicted, write_csv, write_parquet
from crypto_assets.forecast.store import (
    FORECAST_CV_PREDICTIONS,
    FORECAST_METRICS,
    FORECAST_RESULTS,
    FORECASTS,
    read_daily_filled,
    read_history,
    read_symbol,
    report_path,
    symbol_file,
)
from crypto_assets.resources import MarketDataResource
from crypto_assets.serving.reports import report_url
from crypto_assets.settings import Settings

GROUP = "forecast"


def _write(frame: pl.DataFrame, path: Path) -> int:
    write_parquet(frame, path)
    return path.stat().st_size


def _horizon_value(metrics: pl.DataFrame, model: str, horizon: int, column: str) -> float | None:
    rows = metrics.filter((pl.col("model") == model) & (pl.col("horizon") == horizon))
    return None if rows.height == 0 or rows[column][0] is None else float(rows[column][0])


def build_forecast_assets(settings: Settings) -> list:
    common = {
        "partitions_def": StaticPartitionsDefinition(settings.symbol_names),
        "group_name": GROUP,
        "kinds": {"prophet", "polars", "parquet"},
    }
    whole_history = [AssetDep(PROPHET_INPUT, partition_mapping=AllPartitionMapping())]

    @asset(
        **common,
        deps=whole_history,
        description="Prophet fitted on the symbol's whole daily history: the next horizon_days (default 30) with "
        "yhat, yhat_lower, yhat_upper (is_forecast = true), plus the in-sample fit (is_forecast = false).",
    )
    def forecasts(context: AssetExecutionContext, config: ForecastConfig, market: MarketDataResource) -> MaterializeResult:
        symbol, options = context.partition_key, config.to_options()
        history = read_history(market.lake, symbol)
        context.log.info(f"{symbol}: fitting Prophet on {history.height:,} days "
                         f"({history['ds'].min()} .. {history['ds'].max()}), horizon {options.horizon_days} days")  # fmt: skip
        frame = forecast(history, options, include_history=True)
        path = symbol_file(market.lake, FORECASTS, symbol)
        size = _write(frame, path)
        future = frame.filter(pl.col("is_forecast"))
        context.log.info(f"{symbol}: wrote {future.height} forecast days to {path}")
        last = future.row(-1, named=True)
        return MaterializeResult(
            metadata={
                "rows": MetadataValue.int(frame.height),
                "history_days": MetadataValue.int(history.height),
                "last_actual_day": MetadataValue.text(str(history["ds"].max())),
                "horizon_days": MetadataValue.int(future.height),
                "last_yhat": MetadataValue.float(last["yhat"]),
                "last_interval": MetadataValue.text(f"{last['yhat_lower']:.2f} .. {last['yhat_upper']:.2f}"),
                "bytes_written": MetadataValue.int(size),
                "path": MetadataValue.path(str(path)),
                "preview": MetadataValue.md(markdown_table(future)),
            }
        )

    @asset(
        **common,
        deps=whole_history,
        description="Rolling-origin cross-validation: MAE, RMSE, MAPE and interval coverage per horizon for Prophet "
        "and the naive and drift baselines on the same cut-offs; skill = 1 - MAPE_model / MAPE_naive. "
        "The CV predictions are written to forecast_cv_predictions.",
        check_specs=[
            AssetCheckSpec(
                "mape_1d_below_threshold",
                asset="forecast_metrics",
                description="Prophet's 1-day CV MAPE is at most mape_warn_threshold (WARN)",
            ),
            AssetCheckSpec(
                "not_worse_than_naive",
                asset="forecast_metrics",
                description="Prophet's CV MAPE is not above the naive baseline's at any horizon (WARN)",
            ),
        ],
    )
    def forecast_metrics(
        context: AssetExecutionContext, config: ForecastConfig, market: MarketDataResource
    ) -> MaterializeResult:
        symbol, options = context.partition_key, config.to_options()
        history = read_history(market.lake, symbol)
        context.log.info(f"{symbol}: cross-validating on {history.height:,} days, horizons {options.cv_horizons}, "
                         f"up to {options.cv_max_cutoffs} cut-offs on {options.cv_workers} worker(s)")  # fmt: skip
        cv = cross_validate(history, options)
        metrics_path = symbol_file(market.lake, FORECAST_METRICS, symbol)
        predictions_path = symbol_file(market.lake, FORECAST_CV_PREDICTIONS, symbol)
        size = _write(cv.metrics, metrics_path) + _write(cv.predictions, predictions_path)
        cutoffs = cv.predictions["cutoff"].unique().sort()
        context.log.info(f"{symbol}: {cutoffs.len()} cut-offs ({cutoffs.min()} .. {cutoffs.max()}) written")
        first_h = min(options.cv_horizons)
        metadata = {
            "cutoffs": MetadataValue.int(cutoffs.len()),
            "first_cutoff": MetadataValue.text(str(cutoffs.min())),
            "last_cutoff": MetadataValue.text(str(cutoffs.max())),
            "metrics": MetadataValue.md(metrics_markdown(cv.metrics, symbol)),
            "bytes_written": MetadataValue.int(size),
            "path": MetadataValue.path(str(metrics_path)),
            "cv_predictions_path": MetadataValue.path(str(predictions_path)),
        }
        for column in ("mape", "skill", "coverage"):
            value = _horizon_value(cv.metrics, PROPHET, first_h, column)
            if value is not None:
                metadata[f"prophet_{column}_{first_h}d"] = MetadataValue.float(value)
        return MaterializeResult(
            metadata=metadata,
            check_results=[
                to_check_result(
                    "mape_1d_below_threshold",
                    checks.mape_below_threshold(cv.metrics, options.mape_warn_threshold, first_h),
                ),
                to_check_result("not_worse_than_naive", checks.not_worse_than_naive(cv.metrics)),
            ],
        )

    @asset(
        **common,
        deps=[
            AssetDep(forecasts),
            AssetDep(forecast_metrics),
            AssetDep(DAILY_FILLED, partition_mapping=AllPartitionMapping()),
        ],
        description="Actual close next to Prophet's prediction per day (Parquet and CSV), and an interactive Plotly "
        "report per symbol (price with MA7/MA30, forecast with interval, CV MAPE by horizon) under `<home>/reports` (the project home).",
    )
    def forecast_results(context: AssetExecutionContext, market: MarketDataResource) -> MaterializeResult:
        symbol = context.partition_key
        daily = read_daily_filled(market.lake, symbol)
        fc = read_symbol(market.lake, FORECASTS, symbol)
        metrics = read_symbol(market.lake, FORECAST_METRICS, symbol)
        actual = daily.select("symbol", pl.col("date").alias("ds"), pl.col("close").alias("y"))
        results = actual_vs_predicted(actual, fc)
        parquet_path = symbol_file(market.lake, FORECAST_RESULTS, symbol)
        csv_path = symbol_file(market.lake, FORECAST_RESULTS, symbol, ".csv")
        size = _write(results, parquet_path)
        write_csv(results, csv_path)
        chart = write_forecast_chart(report_path(Path(market.home), symbol), symbol, daily, fc, metrics).resolve()
        chart_url = report_url(market.settings(), chart.name)
        context.log.info(f"{symbol}: {results.height:,} rows to {parquet_path} and {csv_path}; chart {chart} "
                         f"(served at {chart_url} by `crypto-assets reports`)")  # fmt: skip
        return MaterializeResult(
            metadata={
                "rows": MetadataValue.int(results.height),
                "forecast_days": MetadataValue.int(int(results["is_forecast"].sum())),
                "bytes_written": MetadataValue.int(size + csv_path.stat().st_size),
                "path": MetadataValue.path(str(parquet_path)),
                "csv_path": MetadataValue.path(str(csv_path)),
                "chart_path": MetadataValue.path(str(chart)),
                "chart": MetadataValue.url(chart_url),
                "chart_preview": MetadataValue.md(markdown_image(preview_png(symbol, daily, fc, metrics), f"{symbol} forecast")),
                "preview": MetadataValue.md(metrics_markdown(metrics, symbol)),
                "latest_rows": MetadataValue.md(markdown_table(results.filter(pl.col("is_forecast")).head(7))),
            }
        )

    return [forecasts, forecast_metrics, forecast_results]
