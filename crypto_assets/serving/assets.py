"""The serving layer's asset: ``unified_view`` per symbol (group ``serving``).

A thin wrapper around :func:`crypto_assets.serving.pipeline.build_unified_view`: it reports what was
written and turns the pure checks of :mod:`crypto_assets.serving.checks` into asset check results.
"""

from collections.abc import Callable, Iterator
from datetime import timedelta

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    multi_asset,
)

from crypto_assets.asset_names import DAILY_FILLED, MINUTE_RAW, SPEED_MICROBATCHES, UNIFIED_VIEW
from crypto_assets.freshness import serving_freshness
from crypto_assets.quality import Check, CheckOutcome, check_results, check_specs, check_window, markdown_table
from crypto_assets.resources import MarketDataResource
from crypto_assets.serving import checks
from crypto_assets.serving.pipeline import UnifiedResult, build_unified_view
from crypto_assets.serving.unified import BATCH, SPEED
from crypto_assets.settings import Settings, parse_delay

GROUP = "serving"
SPEED_MICROBATCHES_KEY = AssetKey(SPEED_MICROBATCHES)  # declared by the speed layer's definitions


def across_symbols(per_symbol: dict[str, CheckOutcome]) -> CheckOutcome:
    """One check result for the symbols of a run: passes when each passes; the metadata is the first failing
    symbol's (else the first symbol's), and the description names the symbols that failed."""
    failed = {s: o for s, o in per_symbol.items() if not o.passed}
    shown = next(iter(failed.values()), None) or next(iter(per_symbol.values()))
    if len(per_symbol) == 1:
        return shown
    description = "; ".join(f"{s}: {o.description}" for s, o in failed.items()) or shown.description
    return CheckOutcome(not failed, description, shown.severity, dict(shown.metadata))


def per_symbol(judge: Callable[[UnifiedResult], CheckOutcome]) -> Callable[[dict[str, UnifiedResult]], CheckOutcome]:
    """A check of one symbol's view, judged on every symbol of the run (:func:`across_symbols`)."""
    return lambda results: across_symbols({symbol: judge(result) for symbol, result in results.items()})


CHECKS: tuple[Check[dict[str, UnifiedResult]], ...] = (
    Check("schema", "columns and types are as documented", per_symbol(lambda r: checks.schema(r.frame))),
    Check(
        "one_row_per_day",
        "one row per symbol and calendar day, none missing or repeated",
        per_symbol(lambda r: checks.one_row_per_day(r.frame)),
    ),
    Check(
        "batch_precedence",
        "closed days are the batch view's rows unchanged; the speed layer only extends them",
        per_symbol(lambda r: checks.batch_precedence(r.frame, r.batch_view, r.seam)),
    ),
    Check(
        "moving_averages_continuous",
        "MA7/MA30 equal a plain reference across the seam and the batch view's own",
        per_symbol(lambda r: checks.moving_averages_continuous(r.frame, r.batch_view, r.seam)),
    ),
)


def on_batch_updates() -> AutomationCondition:
    """Refresh every symbol's view once after the batch view (daily_filled) is updated, by a backfill or the
    daily refresh, so the view is current with or without the speed layer (whose micro-batches trigger it
    through their own sensor); and build a view that was never built once the batch view is complete (a
    daemon started after the batch graph ran). Not while daily_filled or the view itself is being written."""
    batch_view = AssetSelection.assets(DAILY_FILLED)
    never_built = AutomationCondition.missing() & ~AutomationCondition.any_deps_missing().allow(batch_view)
    return (
        (AutomationCondition.any_deps_updated().allow(batch_view) | never_built).since_last_handled()
        & ~AutomationCondition.any_deps_in_progress().allow(batch_view)
        & ~AutomationCondition.in_progress()
    ).with_label("on_batch_updates")


def symbol_partitions(settings: Settings) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(settings.symbol_names)


def _metadata(result: UnifiedResult) -> dict[str, object]:
    frame = result.frame
    counts = dict(frame.group_by("source").len().iter_rows()) if frame.height else {}
    first, last = (frame["date"].min(), frame["date"].max()) if frame.height else (None, None)
    latest = frame.row(-1, named=True) if frame.height else {}
    compaction = result.compaction
    preview = frame.tail(10).select(
        "date", "source", "is_filled", "open", "high", "low", "close", "volume", "ma7", "ma30", "as_of"
    )
    return {
        "rows": MetadataValue.int(frame.height),
        "seam_date": MetadataValue.text(str(result.seam) if result.seam else "none (no closed batch day)"),
        "batch_rows": MetadataValue.int(int(counts.get(BATCH, 0))),
        "speed_rows": MetadataValue.int(int(counts.get(SPEED, 0))),
        "as_of": MetadataValue.text(str(frame["as_of"].max()) if frame.height else "none"),
        "first": MetadataValue.text(str(first)),
        "last": MetadataValue.text(str(last)),
        "latest_close": MetadataValue.float(float(latest["close"])) if latest else MetadataValue.text("none"),
        "speed_minutes_used": MetadataValue.int(result.speed_minutes),
        "speed_batch_id": MetadataValue.int(result.speed_batch_id)
        if result.speed_batch_id is not None
        else MetadataValue.text("none"),
        "speed_batches_compacted": MetadataValue.int(compaction.batches_compacted),
        "speed_rows_expired": MetadataValue.int(sum(compaction.rows_expired.values())),
        "speed_log_days_removed": MetadataValue.int(len(compaction.log_days_removed)),
        "speed_bytes_reclaimed": MetadataValue.int(compaction.bytes_reclaimed),
        "bytes_written": MetadataValue.int(result.bytes_written),
        "path": MetadataValue.path(str(result.path)),
        "preview": MetadataValue.md(markdown_table(preview)),
    }


def _run_metadata(results: dict[str, UnifiedResult]) -> dict[str, object]:
    """A run of one symbol reports that symbol; a run of several reports each per symbol in a table, with the
    run-wide newest ``speed_batch_id`` and ``as_of``."""
    if len(results) == 1:
        return _metadata(next(iter(results.values())))
    per_symbol = {symbol: _metadata(result) for symbol, result in results.items()}
    keys = ("rows", "seam_date", "batch_rows", "speed_rows", "as_of", "latest_close", "speed_batch_id")
    table = (
        "| symbol | "
        + " | ".join(keys)
        + " |\n|---|"
        + "---|" * len(keys)
        + "\n"
        + "\n".join(
            f"| {symbol} | " + " | ".join(str(m[k].value) for k in keys) + " |" for symbol, m in per_symbol.items()
        )
    )
    seams = {m["seam_date"].value for m in per_symbol.values()}
    batch_ids = [r.speed_batch_id for r in results.values() if r.speed_batch_id is not None]
    as_of = [m["as_of"].value for m in per_symbol.values() if m["as_of"].value != "none"]
    return {
        "symbols": MetadataValue.text(", ".join(results)),
        "per_symbol": MetadataValue.md(table),
        "rows": MetadataValue.int(sum(r.frame.height for r in results.values())),
        "seam_date": MetadataValue.text(seams.pop() if len(seams) == 1 else "per symbol (see per_symbol)"),
        "batch_rows": MetadataValue.int(sum(m["batch_rows"].value for m in per_symbol.values())),
        "speed_rows": MetadataValue.int(sum(m["speed_rows"].value for m in per_symbol.values())),
        "as_of": MetadataValue.text(max(as_of) if as_of else "none"),
        "speed_batch_id": MetadataValue.int(max(batch_ids)) if batch_ids else MetadataValue.text("none"),
        "bytes_written": MetadataValue.int(sum(r.bytes_written for r in results.values())),
        "path": MetadataValue.path(str(next(iter(results.values())).path.parent)),
    }


def build_serving_assets(settings: Settings) -> list:
    @multi_asset(
        specs=[
            AssetSpec(
                UNIFIED_VIEW,
                partitions_def=symbol_partitions(settings),
                group_name=GROUP,
                kinds={"polars", "parquet"},
                deps=[
                    AssetDep(DAILY_FILLED, partition_mapping=AllPartitionMapping()),
                    AssetDep(MINUTE_RAW, partition_mapping=AllPartitionMapping()),
                    AssetDep(SPEED_MICROBATCHES_KEY),
                ],
                description="One daily series per symbol across both layers: closed days from the batch view "
                "(daily_filled), later days and today's running candle from the speed layer's micro-batches; batch "
                "wins where both have a day. Each row says its source (batch | speed) and as_of; MA7/MA30 are "
                "recomputed across the seam. Superseded micro-batches are compacted or expired on every run.",
                automation_condition=on_batch_updates(),
                freshness_policy=serving_freshness(settings),
            )
        ],
        name=UNIFIED_VIEW,
        # The micro-batch sensor refreshes every symbol with new micro-batches in one run (a range of symbols).
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=check_specs(UNIFIED_VIEW, CHECKS),
        # Routine refreshes may leave the checks out ([serving] view_check_minutes): Dagster keeps every result.
        can_subset=True,
    )
    def unified_view(context: AssetExecutionContext, market: MarketDataResource) -> Iterator[MaterializeResult]:
        current = market.settings()
        current.require_local_lake("the unified view")
        symbols = current.symbol_names
        delay = timedelta(milliseconds=parse_delay(current.stream.watermark))
        results: dict[str, UnifiedResult] = {}
        for symbol in context.partition_keys:
            result = results[symbol] = build_unified_view(market.lake, symbol, symbols, delay)
            compaction = result.compaction
            context.log.info(
                f"{symbol}: {result.frame.height:,} days, seam {result.seam}, {result.speed_minutes:,} streamed "
                f"minutes after it; compacted {compaction.batches_compacted} micro-batch(es), expired "
                f"{sum(compaction.rows_expired.values()):,} superseded row(s) and {len(compaction.log_days_removed)} "
                "log day(s)"
            )
        days = [r.frame["date"] for r in results.values() if r.frame.height]
        window = check_window(
            f"{min(d.min() for d in days)} .. {max(d.max() for d in days)}" if days else "none", list(results)
        )
        selected = {key.name for key in context.selected_asset_check_keys}
        for check in CHECKS:  # a routine refresh that leaves the checks to a later one still says what fails
            outcome = None if check.name in selected else check.judge(results)
            if outcome and not outcome.passed:
                context.log.warning(f"check {check.name} would fail: {outcome.description}")
        yield MaterializeResult(  # yielded: a returned one is taken for a tuple of outputs when checks are left out
            metadata=_run_metadata(results) | {"checks_evaluated": bool(selected)},
            check_results=check_results(CHECKS, results, window, selected),
        )

    return [unified_view]
