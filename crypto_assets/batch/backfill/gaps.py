"""The gap report of a time window: read ``minute_raw`` and the known-empty ranges, write ``minute_gaps``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from crypto_assets.asset_names import MINUTE_GAPS
from crypto_assets.batch.backfill.store import EXCHANGE_EMPTY, read_ranges
from crypto_assets.batch.backfill.transforms import (
    GAP_SCHEMA,
    expected_spans,
    gap_report,
    month_starts,
)
from crypto_assets.batch.pipeline import read_minutes
from crypto_assets.lake.datasets import WriteSummary, write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.settings import Settings


def symbol_starts(settings: Settings, symbols: list[str] | None = None) -> dict[str, date]:
    """Each symbol's own first day (``history_starts``); ``symbols`` narrows it (each must be configured)."""
    from crypto_assets.batch.source_catalog import history_starts

    names = symbols or settings.symbol_names
    starts = history_starts(settings)
    return {settings.symbol(name).name: starts[name] for name in names}


def find_gaps(
    lake: Path, starts: Mapping[str, date], start: datetime, end: datetime, now: datetime | None = None
) -> pl.DataFrame:
    """Missing minutes of ``minute_raw`` in [start, end) (``GAP_SCHEMA``), cut at month starts."""
    now = now or datetime.now(UTC)
    months = months_between(start, end)
    # One symbol at a time: symbols share no minute, and memory then follows one symbol's window, not the range's.
    parts = []
    for symbol in sorted(starts):  # the report's (symbol, gap_start) order
        minutes = read_minutes(lake, [symbol], start, end).select("symbol", "open_time")
        known_empty = read_ranges(lake, EXCHANGE_EMPTY, [symbol], months)
        spans = expected_spans({symbol: starts[symbol]}, start, end, now)
        parts.append(gap_report(minutes, spans, known_empty, month_starts(start, end)).collect())
    return pl.concat(parts) if parts else pl.DataFrame(schema=GAP_SCHEMA)


def write_gap_report(
    gaps: pl.DataFrame, lake: Path, symbols: list[str], start: datetime, end: datetime
) -> WriteSummary:
    return write_months(gaps, lake, MINUTE_GAPS, "gap_start", symbols, months_between(start, end))
