"""The batch layer's assets: minute_raw -> daily_raw -> daily_filled -> prophet_input.

Thin wrappers: each asset reads its time window, calls one step of :mod:`crypto_assets.batch.pipeline` (or
:mod:`crypto_assets.batch.minute_ingest`), and reports metadata and asset checks.
"""

import warnings

import polars as pl
from dagster import (
    AssetCheckSpec,
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
from crypto_assets.batch.listing import MAX_LISTED
from crypto_assets.batch.metadata import (
    check_window,
    dataset_metadata,
    judged,
    months_label,
    stats_lines,
    stats_metadata,
    symbol_lines,
    to_check_result,
)
from crypto_assets.batch.partitions import batch_partitions, window_bounds
from crypto_assets.batch.pipeline import (
    FILLED_LOOKBACK_MONTHS,
    build_daily_filled,
    build_daily_raw,
    build_prophet_input,
    latest_closed_date,
)
from crypto_assets.batch.source_catalog import resolve_sources
from crypto_assets.batch.written_minutes import judge_written_minutes
from crypto_assets.freshness import batch_freshness
from crypto_assets.lake.layout import months_between
from crypto_assets.resources import MarketDataResource
from crypto_assets.schema import DAILY_SCHEMA, FILLED_SCHEMA, PROPHET_SCHEMA
from crypto_assets.settings import Settings

GROUP = "batch"

# BackfillPolicy is marked beta; single-run range backfills are the point of these assets.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")


def _specs(asset_name: str, *checks_: tuple[str, str]) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=asset_name, description=text) for name, text in checks_]


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
        check_specs=_specs(
            MINUTE_RAW,
            ("schema", "columns and types are as documented"),
            ("unique_minutes", "no duplicate (symbol, open_time)"),
            ("ohlc_consistent", "OHLC values are consistent"),
            ("minutes_complete", "every minute is present; lists the gaps (WARN)"),
            (
                "sources_clean",
                "every source file was readable, no row was quarantined and no two sources disagreed (WARN)",
            ),
        ),
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

        many = len(sources) > MAX_LISTED  # then one line for all files instead of one per file

        def log_source(report):
            if report.error:
                context.log.warning(f"skipped {report.error}")
            elif not many:
                context.log.debug(
                    f"read {report.path} ({report.format}): {report.rows:,} rows in window, "
                    f"{report.quarantined:,} quarantined"
                )

        result = batch_engine.ingest()(
            sources,
            market.lake,
            cfg.symbol_names,
            start,
            end,
            progress=log_source,
            on_wait=context.log.info,
            landing=cfg.landing_dir,
            keep_rows=False,  # judged below symbol by symbol: a long range's rows never sit in memory at once
        )
        if many:
            read = [r for r in result.sources if not r.error]
            context.log.debug(
                f"read {len(read)} file(s): {sum(r.rows for r in read):,} rows in window, "
                f"{sum(r.quarantined for r in read):,} quarantined"
            )
        conflicts = result.conflicts.height
        if conflicts:
            context.log.warning(
                f"{conflicts:,} conflicting minute version(s) kept in minute_conflicts:\n{result.conflict_summary()}"
            )
        written = judge_written_minutes(market.lake, cfg.symbol_names, months_between(start, end))
        for line in stats_lines(written.stats, cfg.symbol_names):
            context.log.info(f"minute_raw {months} from {len(sources)} file(s): {line}")
        failures = [str(e) for e in unplaced] + [s.error for s in result.failed_sources]
        metadata = stats_metadata(written.stats, written.preview, result.minute) | {
            "sources": MetadataValue.int(len(sources)),
            "synthetic_default": MetadataValue.bool(synthetic_default),
            "rows_read": MetadataValue.int(result.rows_read),
            "duplicates_removed": MetadataValue.int(result.duplicates_removed),
            "quarantined_rows": MetadataValue.int(result.quarantined),
            "conflicts": MetadataValue.int(conflicts),
            "conflicts_by_source": MetadataValue.text(result.conflict_summary()),
            "conflicts_path": MetadataValue.path(str(market.lake / "minute_conflicts")),
            "quarantine_path": MetadataValue.path(str(market.lake / "quarantine")),
            "path": MetadataValue.path(str(market.lake / MINUTE_RAW)),
        }
        sources_clean = checks.CheckOutcome(
            not failures and result.quarantined == 0 and conflicts == 0,
            "all source files readable, no quarantined rows, no conflicting versions of a minute",
            checks.Severity.WARN,
            {
                "unreadable_files": "\n".join(failures) or "none",
                "quarantined_rows": result.quarantined,
                "conflicts": conflicts,
                "conflicts_by_source": result.conflict_summary(),
            },
        )
        return MaterializeResult(
            metadata=metadata,
            check_results=judged(
                check_window(months, cfg.symbol_names),
                [
                    to_check_result("schema", written.schema),
                    to_check_result("unique_minutes", written.unique),
                    to_check_result("ohlc_consistent", written.ohlc),
                    to_check_result(
                        "minutes_complete",
                        checks.completeness_outcome(written.completeness, backfilled=backfill_runs(cfg)),
                    ),
                    to_check_result("sources_clean", sources_clean),
                ],
            ),
        )

    @asset(
        name=DAILY_RAW,
        **on_engine,
        deps=[AssetDep(minute_raw), AssetDep(EXCHANGE_BACKFILL)],
        description="Daily OHLCV per symbol and UTC day, with minute_count so incomplete days are visible.",
        freshness_policy=batch_freshness(settings),
        check_specs=_specs(
            DAILY_RAW,
            ("schema", "columns and types are as documented"),
            ("unique_days", "no duplicate (symbol, date)"),
            ("ohlc_consistent", "OHLC values are consistent"),
            ("fresh", "the latest closed day is recent (WARN); today's running day does not count"),
        ),
    )
    def daily_raw(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        cfg = market.settings()
        start, end = window_bounds(context.partition_time_window)
        engine = batch_engine.steps()
        step = build_daily_raw(market.lake, cfg.symbol_names, start, end, engine)
        months = months_label(start, end)
        for line in symbol_lines(step.frame, "date", cfg.symbol_names):
            context.log.info(f"daily_raw {months}: {line}")
        # Freshness judges closed days: today's running day is always "fresh" and says nothing of the pipeline.
        newest = [d for d in (latest_closed_date(market.lake, DAILY_RAW, s) for s in cfg.symbol_names) if d]
        return MaterializeResult(
            metadata=dataset_metadata(step.frame, step.summary, "date") | {"engine": MetadataValue.text(engine.name)},
            check_results=judged(
                check_window(months, cfg.symbol_names),
                [
                    to_check_result("schema", checks.schema_matches(step.frame, DAILY_SCHEMA)),
                    to_check_result("unique_days", checks.unique_keys(step.frame, ["symbol", "date"])),
                    to_check_result("ohlc_consistent", checks.ohlc_consistent(step.frame)),
                    to_check_result("fresh", checks.fresh(max(newest, default=None), cfg.freshness_hours)),
                ],
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
        check_specs=_specs(
            DAILY_FILLED,
            ("schema", "columns and types are as documented"),
            ("no_missing_days", "one row per calendar day"),
            ("moving_averages_correct", "ma7 and ma30 equal a plain reference computation"),
        ),
    )
    def daily_filled(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        cfg = market.settings()
        start, end = window_bounds(context.partition_time_window)
        engine = batch_engine.steps()
        step = build_daily_filled(market.lake, cfg.symbol_names, start, end, engine)
        months = months_label(start, end)
        filled = dict(step.frame.group_by("symbol").agg(pl.col("is_filled").sum()).iter_rows())
        notes = {symbol: f"{filled.get(symbol) or 0} forward-filled" for symbol in cfg.symbol_names}
        for line in symbol_lines(step.frame, "date", cfg.symbol_names, notes):
            context.log.info(f"daily_filled {months}: {line}")
        return MaterializeResult(
            metadata=dataset_metadata(step.frame, step.summary, "date")
            | {"filled_days": MetadataValue.int(int(step.frame["is_filled"].sum() or 0))}
            | {"engine": MetadataValue.text(engine.name)},
            check_results=judged(
                check_window(months, cfg.symbol_names),
                [
                    to_check_result("schema", checks.schema_matches(step.frame, FILLED_SCHEMA)),
                    to_check_result("no_missing_days", checks.no_missing_days(step.context)),
                    to_check_result(
                        "moving_averages_correct", checks.moving_averages_correct(step.context, start.date())
                    ),
                ],
            ),
        )

    @asset(
        name=PROPHET_INPUT,
        **on_engine,
        deps=[AssetDep(daily_filled)],
        description="Prophet's input: ds (day), y (close), symbol. Follows daily_filled month by month, so a "
        "backfill rebuilds it for the same months as daily_filled (two after the range, see daily_filled).",
        check_specs=_specs(
            PROPHET_INPUT,
            ("schema", "columns ds, y, symbol with the documented types"),
            ("complete", "no nulls and one row per (symbol, ds)"),
        ),
    )
    def prophet_input(
        context: AssetExecutionContext, market: MarketDataResource, batch_engine: BatchEngineResource
    ) -> MaterializeResult:
        cfg = market.settings()
        start, end = window_bounds(context.partition_time_window)
        engine = batch_engine.steps()
        step = build_prophet_input(market.lake, cfg.symbol_names, start, end, engine)
        months = months_label(start, end)
        for line in symbol_lines(step.frame, "ds", cfg.symbol_names):
            context.log.info(f"prophet_input {months}: {line}")
        return MaterializeResult(
            metadata=dataset_metadata(step.frame, step.summary, "ds") | {"engine": MetadataValue.text(engine.name)},
            check_results=judged(
                check_window(months, cfg.symbol_names),
                [
                    to_check_result("schema", checks.schema_matches(step.frame, PROPHET_SCHEMA)),
                    to_check_result(
                        "complete",
                        checks.combine(checks.no_nulls(step.frame), checks.unique_keys(step.frame, ["symbol", "ds"])),
                    ),
                ],
            ),
        )

    return [minute_raw, daily_raw, daily_filled, prophet_input]
