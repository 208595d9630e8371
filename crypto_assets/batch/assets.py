"""The batch layer's assets: minute_raw -> daily_raw -> daily_filled -> prophet_input.

Thin wrappers: each asset reads its time window, calls one step of :mod:`crypto_assets.batch.pipeline` (or
:mod:`crypto_assets.batch.minute_ingest`), and reports metadata and asset checks.
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl
from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)

from crypto_assets.asset_names import DAILY_FILLED, DAILY_RAW, EXCHANGE_BACKFILL, MINUTE_RAW, PROPHET_INPUT
from crypto_assets.batch import checks
from crypto_assets.batch.backfill.guard import backfill_runs
from crypto_assets.batch.engine import BatchEngineResource
from crypto_assets.batch.ingest_report import IngestFacts, ingest_metadata, log_ingest, source_logger, sources_clean
from crypto_assets.batch.metadata import dataset_metadata, months_label, symbol_lines
from crypto_assets.batch.partitions import batch_partitions, window_bounds
from crypto_assets.batch.pipeline import (
    FILLED_LOOKBACK_MONTHS,
    StepResult,
    build_daily_filled,
    build_daily_raw,
    build_prophet_input,
    latest_closed_date,
)
from crypto_assets.batch.source_catalog import resolve_sources
from crypto_assets.batch.written_minutes import judge_written_minutes
from crypto_assets.freshness import batch_freshness
from crypto_assets.lake.layout import months_between
from crypto_assets.quality import Check, check_results, check_specs, check_window, combine
from crypto_assets.resources import MarketDataResource
from crypto_assets.schema import DAILY_SCHEMA, FILLED_SCHEMA, PROPHET_SCHEMA
from crypto_assets.settings import Settings

GROUP = "batch"

# BackfillPolicy is marked beta; single-run range backfills are the point of these assets.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")


@dataclass(frozen=True)
class Written:
    """What an engine step wrote, as its checks judge it."""

    frame: pl.DataFrame
    context: pl.DataFrame | None = None  # daily_filled: the window with its look-back rows
    window_start: date | None = None
    newest_closed: date | None = None  # daily_raw: the newest closed day of any symbol
    freshness_hours: float = 0.0


SCHEMA = "columns and types are as documented"
OHLC = Check("ohlc_consistent", "OHLC values are consistent", lambda w: checks.ohlc_consistent(w.frame))

MINUTE_RAW_CHECKS: tuple[Check[IngestFacts], ...] = (
    Check("schema", SCHEMA, lambda f: f.written.schema),
    Check("unique_minutes", "no duplicate (symbol, open_time)", lambda f: f.written.unique),
    Check("ohlc_consistent", "OHLC values are consistent", lambda f: f.written.ohlc),
    Check(
        "minutes_complete",
        "every minute is present; lists the gaps (WARN)",
        lambda f: checks.completeness_outcome(f.written.completeness, backfilled=f.backfilled),
    ),
    Check(
        "sources_clean",
        "every source file was readable, no row was quarantined and no two sources disagreed (WARN)",
        sources_clean,
    ),
)
DAILY_RAW_CHECKS: tuple[Check[Written], ...] = (
    Check("schema", SCHEMA, lambda w: checks.schema_matches(w.frame, DAILY_SCHEMA)),
    Check("unique_days", "no duplicate (symbol, date)", lambda w: checks.unique_keys(w.frame, ["symbol", "date"])),
    OHLC,
    Check(
        "fresh",
        "the latest closed day is recent (WARN); today's running day does not count",
        lambda w: checks.fresh(w.newest_closed, w.freshness_hours),
    ),
)
DAILY_FILLED_CHECKS: tuple[Check[Written], ...] = (
    Check("schema", SCHEMA, lambda w: checks.schema_matches(w.frame, FILLED_SCHEMA)),
    Check("no_missing_days", "one row per calendar day", lambda w: checks.no_missing_days(w.context)),
    Check(
        "moving_averages_correct",
        "ma7 and ma30 equal a plain reference computation",
        lambda w: checks.moving_averages_correct(w.context, w.window_start),
    ),
)
PROPHET_INPUT_CHECKS: tuple[Check[Written], ...] = (
    Check(
        "schema",
        "columns ds, y, symbol with the documented types",
        lambda w: checks.schema_matches(w.frame, PROPHET_SCHEMA),
    ),
    Check(
        "complete",
        "no nulls and one row per (symbol, ds)",
        lambda w: combine(checks.no_nulls(w.frame), checks.unique_keys(w.frame, ["symbol", "ds"])),
    ),
)


@dataclass(frozen=True)
class StepRun:
    """One engine step over a run's window, logged per symbol."""

    settings: Settings
    start: datetime
    months: str
    engine: str
    step: StepResult

    def metadata(self, time_column: str) -> dict[str, object]:
        return dataset_metadata(self.step.frame, self.step.summary, time_column) | {
            "engine": MetadataValue.text(self.engine)
        }

    def window(self) -> dict[str, object]:
        return check_window(self.months, self.settings.symbol_names)


def run_step(
    context: AssetExecutionContext,
    market: MarketDataResource,
    batch_engine: BatchEngineResource,
    build: Callable[..., StepResult],
    time_column: str,
    notes: Callable[[pl.DataFrame, list[str]], dict[str, str]] | None = None,
) -> StepRun:
    """Runs ``build`` on the batch engine for the run's months and logs a line per symbol."""
    cfg = market.settings()
    start, end = window_bounds(context.partition_time_window)
    engine = batch_engine.steps()
    step = build(market.lake, cfg.symbol_names, start, end, engine)
    months = months_label(start, end)
    for line in symbol_lines(
        step.frame, time_column, cfg.symbol_names, notes(step.frame, cfg.symbol_names) if notes else None
    ):
        context.log.info(f"{context.asset_key.to_user_string()} {months}: {line}")
    return StepRun(cfg, start, months, engine.name, step)


def filled_notes(frame: pl.DataFrame, symbols: list[str]) -> dict[str, str]:
    filled = dict(frame.group_by("symbol").agg(pl.col("is_filled").sum()).iter_rows())
    return {symbol: f"{filled.get(symbol) or 0} forward-filled" for symbol in symbols}


def build_batch_assets(settings: Settings) -> list:
    partitions = batch_partitions(settings)
    common = dict(
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars", "parquet"},
    )
    # Every step runs on the configured engine (spark.engine), the batch_engine resource.
    on_engine = {**common, "kinds": {settings.spark.engine, "parquet"}}

    @asset(
        name=MINUTE_RAW,
        # With the Spark engine the merge runs on the session too (crypto_assets.spark.ingest).
        **on_engine,
        description="Cleaned 1-minute OHLCV master dataset, Hive-partitioned by symbol and month. "
        "Rows failing validation go to the quarantine dataset with their reason, file and line.",
        check_specs=check_specs(MINUTE_RAW, MINUTE_RAW_CHECKS),
    )
    def minute_raw(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        cfg = market.settings()
        start, end = window_bounds(context.partition_time_window)
        generated = []
        sources, unplaced, synthetic_default = resolve_sources(cfg, progress=lambda _, rows: generated.append(rows))
        if synthetic_default:  # one line for the whole market, however many symbols it has
            context.log.debug(f"synthetic market: {len(generated)} symbol(s) ready, {sum(generated):,} rows generated")
        months = months_label(start, end)
        context.log.debug(f"ingesting {len(sources)} source file(s) for {months}")
        result = batch_engine.ingest()(
            sources,
            market.lake,
            cfg.symbol_names,
            start,
            end,
            progress=source_logger(context.log, len(sources)),
            on_wait=context.log.info,
            landing=cfg.landing_dir,
            keep_rows=False,  # judged below symbol by symbol: a long range's rows never sit in memory at once
        )
        facts = IngestFacts(
            judge_written_minutes(market.lake, cfg.symbol_names, months_between(start, end)),
            result,
            [str(e) for e in unplaced] + [s.error for s in result.failed_sources],
            backfilled=backfill_runs(cfg),
        )
        log_ingest(context.log, facts, cfg.symbol_names, len(sources), months)
        return MaterializeResult(
            metadata=ingest_metadata(facts, len(sources), synthetic_default, market.lake),
            check_results=check_results(MINUTE_RAW_CHECKS, facts, check_window(months, cfg.symbol_names)),
        )

    @asset(
        name=DAILY_RAW,
        **on_engine,
        deps=[AssetDep(minute_raw), AssetDep(EXCHANGE_BACKFILL)],
        description="Daily OHLCV per symbol and UTC day, with minute_count so incomplete days are visible.",
        freshness_policy=batch_freshness(settings),
        check_specs=check_specs(DAILY_RAW, DAILY_RAW_CHECKS),
    )
    def daily_raw(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        run = run_step(context, market, batch_engine, build_daily_raw, "date")
        # Freshness judges closed days: today's running day is always "fresh" and says nothing of the pipeline.
        lake, symbols = market.lake, run.settings.symbol_names
        newest = [d for d in (latest_closed_date(lake, DAILY_RAW, s) for s in symbols) if d]
        return MaterializeResult(
            metadata=run.metadata("date"),
            check_results=check_results(
                DAILY_RAW_CHECKS,
                Written(
                    run.step.frame,
                    newest_closed=max(newest, default=None),
                    freshness_hours=run.settings.freshness_hours,
                ),
                run.window(),
            ),
        )

    @asset(
        name=DAILY_FILLED,
        **on_engine,
        deps=[AssetDep(daily_raw, partition_mapping=TimeWindowPartitionMapping(start_offset=-FILLED_LOOKBACK_MONTHS))],
        freshness_policy=batch_freshness(settings),
        description="Continuous daily calendar: missing days forward-filled and flagged, with MA7 and MA30 of close. "
        "Each month reads the two months of daily_raw before it, so the fill and MA30 are right across month "
        "boundaries. That look-back is in the lineage: a month of daily_raw feeds daily_filled for that month and "
        "the two after it, so a backfill of months M..N also rebuilds daily_filled and prophet_input for N+1 and "
        "N+2 (Dagster runs them as a second single run of the same backfill).",
        check_specs=check_specs(DAILY_FILLED, DAILY_FILLED_CHECKS),
    )
    def daily_filled(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        run = run_step(context, market, batch_engine, build_daily_filled, "date", filled_notes)
        frame = run.step.frame
        return MaterializeResult(
            metadata=run.metadata("date") | {"filled_days": MetadataValue.int(int(frame["is_filled"].sum() or 0))},
            check_results=check_results(
                DAILY_FILLED_CHECKS, Written(frame, run.step.context, window_start=run.start.date()), run.window()
            ),
        )

    @asset(
        name=PROPHET_INPUT,
        **on_engine,
        deps=[AssetDep(daily_filled)],
        description="Prophet's input: ds (day), y (close), symbol. Follows daily_filled month by month, so a "
        "backfill rebuilds it for the same months as daily_filled (two after the range, see daily_filled).",
        check_specs=check_specs(PROPHET_INPUT, PROPHET_INPUT_CHECKS),
    )
    def prophet_input(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        run = run_step(context, market, batch_engine, build_prophet_input, "ds")
        return MaterializeResult(
            metadata=run.metadata("ds"),
            check_results=check_results(PROPHET_INPUT_CHECKS, Written(run.step.frame), run.window()),
        )

    return [minute_raw, daily_raw, daily_filled, prophet_input]
