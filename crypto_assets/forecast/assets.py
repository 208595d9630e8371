"""The forecast assets: prophet_input -> forecast_metrics -> forecasts -> forecast_results (group ``forecast``).

Partitioned by symbol; each run reads the symbol's whole history (every month of prophet_input, hence
AllPartitionMapping). forecast_metrics cross-validates every candidate model on the same weekly origins, picks
the champion per horizon and calibrates the intervals; forecasts fits them all on the whole history; forecast_results
serves the champion beside Prophet and naive, with the report. A history too short for the CV makes
forecast_metrics skip with a message, and Dagster then skips the two downstream assets: nothing half-written.
Thin wrappers: the modelling lives in the pure modules of :mod:`crypto_assets.forecast`.
"""

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from crypto_assets.asset_names import DAILY_FILLED, FORECAST_METRICS, FORECAST_RESULTS, FORECASTS, PROPHET_INPUT
from crypto_assets.forecast import checks
from crypto_assets.forecast.candidates import LABELS
from crypto_assets.forecast.charts import metrics_markdown, write_forecast_chart
from crypto_assets.forecast.config import ForecastConfig
from crypto_assets.forecast.cross_validation import CVResult, TooShortHistory, cross_validate
from crypto_assets.forecast.evaluation import served_models
from crypto_assets.forecast.options import ForecastOptions
from crypto_assets.forecast.preview import markdown_image, preview_png
from crypto_assets.forecast.results import actual_vs_predicted, write_csv, write_parquet
from crypto_assets.forecast.served import forecast_all, served_path
from crypto_assets.forecast.store import (
    FORECAST_CV_PREDICTIONS,
    read_daily_filled,
    read_history,
    read_symbol,
    report_path,
    report_url,
    symbol_file,
)
from crypto_assets.quality import (
    Check,
    CheckOutcome,
    Severity,
    check_results,
    check_specs,
    markdown_table,
    to_check_result,
)
from crypto_assets.resources import MarketDataResource
from crypto_assets.settings import Settings

GROUP = "forecast"


@dataclass(frozen=True)
class Scored:
    """What the forecast checks judge: the cross-validated metrics and the options they were scored with."""

    metrics: pl.DataFrame
    options: ForecastOptions


CHECKS: tuple[Check[Scored], ...] = (
    Check(
        "mape_1d_below_threshold",
        "the served model's 1-day CV MAPE is at most mape_warn_threshold (WARN)",
        lambda s: checks.mape_below_threshold(s.metrics, s.options.mape_warn_threshold, min(s.options.cv_horizons)),
    ),
    Check(
        "not_worse_than_naive",
        "the served forecast's CV MAPE is not above naive's at any horizon; says where Prophet loses (WARN)",
        lambda s: checks.not_worse_than_naive(s.metrics.filter(pl.col("horizon").is_in(list(s.options.cv_horizons)))),
    ),
    Check(
        "interval_coverage",
        "the served 80%/95% intervals' CV coverage is within coverage_tolerance of the level, plus the sampling "
        "noise of the origins scored (WARN)",
        lambda s: checks.interval_coverage(
            s.metrics, s.options.cv_horizons, s.options.interval_levels, s.options.coverage_tolerance
        ),
    ),
)


def _write(frame: pl.DataFrame, path: Path) -> int:
    write_parquet(frame, path)
    return path.stat().st_size


def champions_text(metrics: pl.DataFrame, horizons: tuple[int, ...]) -> str:
    served = served_models(metrics)
    return ", ".join(f"{h}d: {LABELS.get(served[h], served[h])}" for h in horizons if h in served)


def write_cv(
    context: AssetExecutionContext, lake: Path, symbol: str, cv: CVResult, options: ForecastOptions
) -> dict[str, object]:
    """Stores the CV metrics and predictions of ``symbol``; their materialization metadata."""
    metrics_path = symbol_file(lake, FORECAST_METRICS, symbol)
    predictions_path = symbol_file(lake, FORECAST_CV_PREDICTIONS, symbol)
    size = _write(cv.predictions, predictions_path) + _write(cv.metrics, metrics_path)
    cutoffs = cv.predictions["cutoff"].unique().sort()
    champions = champions_text(cv.metrics, options.cv_horizons)
    context.log.info(f"{symbol}: {cutoffs.len()} origins ({cutoffs.min()} .. {cutoffs.max()}); served {champions}")
    metadata = {
        "cutoffs": MetadataValue.int(cutoffs.len()),
        "first_cutoff": MetadataValue.text(str(cutoffs.min())),
        "last_cutoff": MetadataValue.text(str(cutoffs.max())),
        "short_history": MetadataValue.bool(cv.short_history),
        "cv_note": MetadataValue.text(cv.note()),
        "served": MetadataValue.text(champions),
        "metrics": MetadataValue.md(metrics_markdown(cv.metrics, symbol, options.cv_horizons)),
        "bytes_written": MetadataValue.int(size),
        "path": MetadataValue.path(str(metrics_path)),
        "cv_predictions_path": MetadataValue.path(str(predictions_path)),
    }
    first_h = min(options.cv_horizons)
    served_first = cv.metrics.filter(pl.col("served") & (pl.col("horizon") == first_h)).row(0, named=True)
    for column in ("mape", "skill", "skill_lo", "skill_hi", "coverage_80", "coverage_95"):
        if served_first.get(column) is not None:
            metadata[f"served_{column}_{first_h}d"] = MetadataValue.float(float(served_first[column]))
    return metadata


def build_forecast_assets(settings: Settings) -> list:
    common = {
        "partitions_def": StaticPartitionsDefinition(settings.symbol_names),
        "group_name": GROUP,
        "kinds": {"prophet", "polars", "parquet"},
    }

    @asset(
        name=FORECAST_METRICS,
        **common,
        deps=[AssetDep(PROPHET_INPUT, partition_mapping=AllPartitionMapping())],
        output_required=False,
        description="Rolling-origin CV (expanding window, weekly origins over the last 52 weeks) of Prophet, naive, "
        "drift and AutoETS on the same origins: MAE, RMSE, MAPE, skill = 1 - MAPE/MAPE_naive with a block-bootstrap "
        "95% interval, conformal interval quantiles at 80%/95% and their honest coverage, and the served champion per "
        "horizon. CV predictions go to forecast_cv_predictions. Skips (and so the whole group) on a too short history.",
        check_specs=check_specs(FORECAST_METRICS, CHECKS),
    )
    def forecast_metrics(context: AssetExecutionContext, config: ForecastConfig, market: MarketDataResource):
        symbol, options = context.partition_key, config.to_options()
        history = read_history(market.lake, symbol)
        context.log.info(
            f"{symbol}: cross-validating {', '.join(options.models)} on {history.height:,} days, "
            f"up to {options.cv_max_cutoffs} origins every {options.cv_period_days} days on {options.cv_workers} worker(s)"
        )
        try:
            cv = cross_validate(
                history,
                options,
                progress=lambda done, total: done % 10 == 0 and context.log.info(f"{symbol}: {done}/{total} folds"),
            )
        except TooShortHistory as exc:
            # No materialization: Dagster skips forecasts and forecast_results too, so the group is never
            # half-written. The checks (outputs Dagster requires) say why on the asset's page.
            context.log.warning(f"{symbol}: skipped. {exc}")
            for check in CHECKS:
                yield to_check_result(
                    check.name, CheckOutcome(False, f"skipped: {exc}", Severity.WARN, {"history_days": history.height})
                )
            return
        if cv.short_history:
            context.log.warning(f"{symbol}: {cv.note()}; the skill and coverage figures rest on fewer origins")
        for error in cv.errors:
            context.log.warning(f"{symbol}: a model failed on some folds (it cannot be served): {error}")
        yield MaterializeResult(metadata=write_cv(context, market.lake, symbol, cv, options))
        yield from check_results(CHECKS, Scored(cv.metrics, options))

    @asset(
        name=FORECASTS,
        **common,
        deps=[AssetDep(forecast_metrics), AssetDep(PROPHET_INPUT, partition_mapping=AllPartitionMapping())],
        description="Every candidate (Prophet, naive, drift, AutoETS) fitted on the whole history: the next horizon_days "
        "with yhat and conformal lower/upper bands at 80% and 95%; `served` marks the champion of each day ahead.",
    )
    def forecasts(
        context: AssetExecutionContext, config: ForecastConfig, market: MarketDataResource
    ) -> MaterializeResult:
        symbol, options = context.partition_key, config.to_options()
        history = read_history(market.lake, symbol)
        metrics = read_symbol(market.lake, FORECAST_METRICS, symbol)
        frame, errors = forecast_all(history, metrics, options)
        for model, error in errors.items():
            context.log.warning(f"{symbol}: {model} failed on the whole history: {error}")
        path = symbol_file(market.lake, FORECASTS, symbol)
        size = _write(frame, path)
        served = served_path(frame)
        last = served.row(-1, named=True)
        context.log.info(f"{symbol}: wrote {frame.height} rows ({frame['model'].n_unique()} models) to {path}")
        return MaterializeResult(
            metadata={
                "rows": MetadataValue.int(frame.height),
                "history_days": MetadataValue.int(history.height),
                "last_actual_day": MetadataValue.text(str(history["ds"].max())),
                "last_close": MetadataValue.float(float(history["y"][-1])),
                "served": MetadataValue.text(champions_text(metrics, options.cv_horizons)),
                "last_yhat": MetadataValue.float(float(last["yhat"])),
                "last_interval_80": MetadataValue.text(f"{last['lower_80']:.2f} .. {last['upper_80']:.2f}"),
                "bytes_written": MetadataValue.int(size),
                "path": MetadataValue.path(str(path)),
                "preview": MetadataValue.md(markdown_table(served.drop("symbol"), rows=8)),
            }
        )

    @asset(
        name=FORECAST_RESULTS,
        **common,
        deps=[
            AssetDep(forecasts),
            AssetDep(forecast_metrics),
            AssetDep(DAILY_FILLED, partition_mapping=AllPartitionMapping()),
        ],
        description="The served forecast next to the actual close (Parquet and CSV): per day ahead the champion model, "
        "yhat with its 80%/95% bands, and Prophet's and naive's forecasts beside it; and the interactive report "
        "(history, served forecast with bands, Prophet, naive, CV backtest at 1/7/30 days, skill table) under "
        "`<home>/reports`.",
    )
    def forecast_results(context: AssetExecutionContext, market: MarketDataResource) -> MaterializeResult:
        symbol = context.partition_key
        daily = read_daily_filled(market.lake, symbol)
        fc = read_symbol(market.lake, FORECASTS, symbol)
        metrics = read_symbol(market.lake, FORECAST_METRICS, symbol)
        predictions = read_symbol(market.lake, FORECAST_CV_PREDICTIONS, symbol)
        actual = daily.select("symbol", pl.col("date").alias("ds"), pl.col("close").alias("y"))
        results = actual_vs_predicted(actual, fc)
        parquet_path = symbol_file(market.lake, FORECAST_RESULTS, symbol)
        csv_path = symbol_file(market.lake, FORECAST_RESULTS, symbol, ".csv")
        size = _write(results, parquet_path)
        write_csv(results, csv_path)
        chart = write_forecast_chart(
            report_path(Path(market.home), symbol), symbol, daily, fc, metrics, predictions
        ).resolve()
        chart_url = report_url(market.settings(), chart.name)
        context.log.info(
            f"{symbol}: {results.height:,} rows to {parquet_path} and {csv_path}; chart {chart} "
            f"(served at {chart_url} by `crypto-assets reports`)"
        )
        horizons = tuple(sorted({1, 7, 30} & set(metrics["horizon"].to_list())))
        return MaterializeResult(
            metadata={
                "rows": MetadataValue.int(results.height),
                "forecast_days": MetadataValue.int(int(results["is_forecast"].sum())),
                "served": MetadataValue.text(champions_text(metrics, horizons)),
                "bytes_written": MetadataValue.int(size + csv_path.stat().st_size),
                "path": MetadataValue.path(str(parquet_path)),
                "csv_path": MetadataValue.path(str(csv_path)),
                "chart_path": MetadataValue.path(str(chart)),
                "chart": MetadataValue.url(chart_url),
                "chart_preview": MetadataValue.md(
                    markdown_image(preview_png(symbol, daily, fc, metrics), f"{symbol} forecast")
                ),
                "preview": MetadataValue.md(metrics_markdown(metrics, symbol, horizons)),
                "latest_rows": MetadataValue.md(
                    markdown_table(results.filter(pl.col("is_forecast")).drop("symbol").head(7))
                ),
            }
        )

    return [forecast_metrics, forecasts, forecast_results]
