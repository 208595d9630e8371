"""minute_gaps -> exchange_backfill: find the missing minutes of ``minute_raw`` and fill them from the exchange.

Thin wrappers over :mod:`crypto_assets.batch.backfill.gaps` and :mod:`crypto_assets.batch.backfill.fill`, on
the batch layer's month partitions (single-run range backfills, every configured symbol per run).
"""

# No ``from __future__ import annotations``: Dagster reads the context annotation at definition time.
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    DagsterLogManager,
    MaterializeResult,
    MetadataValue,
    asset,
)

from crypto_assets.asset_names import EXCHANGE_BACKFILL, MINUTE_GAPS, MINUTE_RAW
from crypto_assets.batch import checks as batch_checks
from crypto_assets.batch.backfill import checks
from crypto_assets.batch.backfill.fill import (
    DEFAULT_CHUNK_MINUTES,
    BackfillResult,
    backfill_window,
    pending_minutes,
)
from crypto_assets.batch.backfill.gaps import find_gaps, symbol_starts, write_gap_report
from crypto_assets.batch.backfill.guard import synthetic_mix_reason
from crypto_assets.batch.backfill.lock import LakeBusyError
from crypto_assets.batch.backfill.store import (
    EXCHANGE_EMPTY,
    EXCHANGE_MINUTES,
)
from crypto_assets.batch.backfill.transforms import GAP_SCHEMA
from crypto_assets.batch.metadata import months_label
from crypto_assets.batch.partitions import batch_partitions, window_bounds
from crypto_assets.batch.pipeline import read_minutes
from crypto_assets.exchange.source import open_exchange
from crypto_assets.lake.datasets import scan_months
from crypto_assets.lake.layout import months_between
from crypto_assets.quality import Check, CheckOutcome, as_metadata, check_results, check_specs, check_window, truncated
from crypto_assets.resources import MarketDataResource
from crypto_assets.settings import Settings

GROUP = "batch"
# Metadata of exchange_backfill: its window is complete up to here (see BackfillResult.covered_until); the daily
# schedule starts its range at the month of the newest such time.
COVERED_UNTIL = "covered_until"


@dataclass(frozen=True)
class BackfillFacts:
    """What exchange_backfill's checks judge: the gaps left, and the window's minutes when the fill wrote them."""

    gaps: pl.DataFrame
    minutes: pl.DataFrame | None = None  # (symbol, open_time) of minute_raw; None when nothing was fetched
    not_run: str = ""  # why nothing was fetched
    enabled: bool = True
    skipped: str | None = None
    error: str | None = None


CHECKS: tuple[Check[BackfillFacts], ...] = (
    Check(
        "gaps_filled",
        "no minute is missing except where the exchange has none (WARN, lists them)",
        lambda f: checks.gaps_filled(f.gaps, enabled=f.enabled, error=f.error, skipped=f.skipped),
    ),
    Check(
        "unique_minutes",
        "minute_raw of the window has one row per (symbol, open_time)",
        lambda f: (
            CheckOutcome(True, f"{f.not_run}: minute_raw was not written")
            if f.minutes is None
            else batch_checks.unique_keys(f.minutes, ["symbol", "open_time"])
        ),
    ),
)
# Why nothing is fetched: (metadata, the reason in the unique_minutes check, the gaps_filled check's arguments).
NotFetched = tuple[dict[str, object], str, dict[str, object]]


def why_not_fetching(cfg: Settings, log: DagsterLogManager) -> NotFetched | None:
    if not cfg.exchange.backfill:
        log.info("exchange backfill disabled (exchange.backfill = false); nothing fetched")
        return {"enabled": False}, "backfill disabled", {"enabled": False}
    skip = synthetic_mix_reason(cfg)
    if skip:
        log.warning(f"exchange backfill skipped: {skip}")
        return {"enabled": True, "skipped": skip}, "backfill skipped", {"skipped": skip}
    return None


def not_fetched(lake: Path, cfg: Settings, months, why: NotFetched) -> tuple[dict[str, object], BackfillFacts]:
    """Nothing fetched and minute_raw untouched: the stored gap report stands; the checks say why."""
    metadata, reason, gap_check = why
    gaps = scan_months(lake, MINUTE_GAPS, cfg.symbol_names, months, GAP_SCHEMA).collect()
    summary = metadata | {"exchange": cfg.exchange.rest_url} | as_metadata(checks.gap_summary(gaps))
    return summary, BackfillFacts(gaps, not_run=reason, **gap_check)


def fetch_gaps(context: AssetExecutionContext, lake: Path, cfg: Settings, start, end) -> BackfillResult:
    def on_plan(minutes: int) -> None:
        context.log.info(f"asking {cfg.exchange.rest_url} for {minutes:,} missing minutes")

    with open_exchange(cfg.exchange) as client:
        return backfill_window(
            lake,
            symbol_starts(cfg),
            client,
            start,
            end,
            chunk_minutes=DEFAULT_CHUNK_MINUTES,
            on_plan=on_plan,
            on_chunk=lambda report: context.log.debug(report.describe()),
            on_wait=context.log.info,
        )


def lake_busy(exc: LakeBusyError) -> NotFetched:
    """Another writer of minute_raw (an ingest or a backfill) kept the lake's lock for the whole wait. This run
    fetched nothing; the gaps stay for the next one. The check says so instead of a step failure."""
    error = f"lake busy: {exc}"
    metadata = {
        "enabled": True,
        "error": error,
        "lock": MetadataValue.path(str(exc.lock_path)),
        "lock_holder": exc.holder,
    }
    return metadata, "backfill did not run", {"error": error}


def filled_metadata(result: BackfillResult, lake: Path, rest_url: str) -> dict[str, object]:
    return {
        "enabled": True,
        "error": result.error or "none",
        "exchange": rest_url,
        "minutes_fetched": result.added,
        "candles_received": result.received,
        "recovered_from_earlier_run": result.recovered,
        "requests": result.requests,
        "chunks": len(result.chunks),
        "quarantined_rows": result.quarantined,
        "gaps_before": pending_minutes(result.gaps_before),
        "gaps_remaining": result.remaining.height,
        "minutes_remaining": pending_minutes(result.gaps_after),
        "exchange_empty_ranges": result.known_empty.height,
        "exchange_empty_minutes": int(result.known_empty["minutes"].sum() or 0),
        "new_exchange_empty_ranges": result.empty_found.height,
        "path": MetadataValue.path(str(lake / EXCHANGE_MINUTES)),
        "exchange_empty_path": MetadataValue.path(str(lake / EXCHANGE_EMPTY)),
    } | ({COVERED_UNTIL: MetadataValue.timestamp(result.covered_until)} if result.covered_until else {})


def build_backfill_assets(settings: Settings) -> list:
    common = {
        "partitions_def": batch_partitions(settings),
        "backfill_policy": BackfillPolicy.single_run(),
        "group_name": GROUP,
        "kinds": {"polars", "parquet"},
    }

    @asset(
        name=MINUTE_GAPS,
        **common,
        deps=[AssetDep(MINUTE_RAW)],
        description="The gap report: minute ranges missing from minute_raw per symbol and month, from each "
        "symbol's own first day (its configured start, or the synthetic market's first day while that feeds the "
        "lake) to the last closed minute, and whether the exchange is already known to have "
        "no candle there (real outages).",
    )
    def minute_gaps(context: AssetExecutionContext, market: MarketDataResource) -> MaterializeResult:
        cfg = market.settings()
        start, end = window_bounds(context.partition_time_window)
        gaps = find_gaps(market.lake, symbol_starts(cfg), start, end)
        written = write_gap_report(gaps, market.lake, cfg.symbol_names, start, end)
        summary = checks.gap_summary(gaps)
        context.log.info(
            f"minute_gaps {months_label(start, end)}: {summary['gaps']:,} gaps ({summary['missing_minutes']:,} "
            f"minutes; {summary['missing_minutes_per_symbol']}) to fetch, {summary['exchange_empty_ranges']:,} "
            "ranges known empty at the exchange"
        )
        return MaterializeResult(
            metadata=as_metadata(summary)
            | {
                "largest_gaps": MetadataValue.md(checks.gap_table(gaps)),
                "files_written": len(written.files),
                "path": MetadataValue.path(str(market.lake / MINUTE_GAPS)),
            }
        )

    @asset(
        name=EXCHANGE_BACKFILL,
        **common,
        deps=[AssetDep(minute_gaps)],
        description="Fills the window's minute gaps from the exchange's REST klines: fetched candles are kept in "
        "exchange_minutes, invalid ones go to quarantine, valid ones are merged into minute_raw (existing rows "
        "win), and ranges the exchange has no candles for are recorded in exchange_empty so they are not asked "
        "for again. Off when exchange.backfill is false; skipped (with a passing check that says why) when "
        "minute_raw is the synthetic demo market and the exchange is not a local replay server, so real prices "
        "never enter synthetic history. Waits for the lake's minute_raw lock while an ingest or another backfill "
        "writes; a wait that runs out fails the gaps_filled check (ERROR), not the step.",
        check_specs=check_specs(EXCHANGE_BACKFILL, CHECKS),
    )
    def exchange_backfill(context: AssetExecutionContext, market: MarketDataResource) -> MaterializeResult:
        cfg = market.settings()
        start, end = window_bounds(context.partition_time_window)
        label = months_label(start, end)
        why = why_not_fetching(cfg, context.log)
        if why is None:
            try:
                result = fetch_gaps(context, market.lake, cfg, start, end)
            except LakeBusyError as exc:
                context.log.error(f"exchange backfill did not run: {exc}")
                why = lake_busy(exc)
        if why is not None:
            metadata, facts = not_fetched(market.lake, cfg, months_between(start, end), why)
        else:
            for line in truncated(result.per_symbol(cfg.symbol_names)):
                context.log.info(f"exchange_backfill {label}: {line}")
            if result.error:
                # The batch view still gets what the files and committed chunks hold; the check shows the failure.
                context.log.error(f"the exchange failed; committed chunks are kept: {result.error}")
            minutes = read_minutes(market.lake, cfg.symbol_names, start, end).select("symbol", "open_time").collect()
            metadata = filled_metadata(result, market.lake, cfg.exchange.rest_url)
            facts = BackfillFacts(result.gaps_after, minutes, error=result.error)
        return MaterializeResult(
            metadata=metadata, check_results=check_results(CHECKS, facts, check_window(label, cfg.symbol_names))
        )

    return [minute_gaps, exchange_backfill]
