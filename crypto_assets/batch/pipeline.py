"""The batch steps after ingestion, each over one time window of month partitions.

Each step reads its input months from the lake, applies a pure transform and rewrites its own months.
The Dagster assets, the CLI and the benchmarks all call these, so the logic exists once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.batch.transforms.daily import DAILY_SCHEMA, aggregate_daily
from crypto_assets.batch.transforms.filled import FILLED_SCHEMA, daily_filled
from crypto_assets.batch.transforms.minute import MINUTE_SCHEMA
from crypto_assets.batch.transforms.prophet import prophet_input
from crypto_assets.lake.datasets import WriteSummary, scan_months, write_months
from crypto_assets.lake.layout import Month, months_between

MINUTE_RAW = "minute_raw"
DAILY_RAW = "daily_raw"
DAILY_FILLED = "daily_filled"
PROPHET_INPUT = "prophet_input"

# daily_filled looks back two months: MA30 on 1 March needs 29 days, which February alone cannot give.
FILLED_LOOKBACK_MONTHS = 2


@dataclass
class StepResult:
    frame: pl.DataFrame  # the rows written for the window
    summary: WriteSummary
    context: pl.DataFrame | None = None  # the rows read around the window (look-back), for checks


def _as_date(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _window_filter(column: str, start: datetime | date, end: datetime | date) -> pl.Expr:
    return (pl.col(column) >= _as_date(start)) & (pl.col(column) < _as_date(end))


def read_minutes(lake: Path, symbols: Sequence[str], start: datetime, end: datetime) -> pl.LazyFrame:
    return scan_months(lake, MINUTE_RAW, symbols, months_between(start, end), MINUTE_SCHEMA)


def build_daily_raw(lake: Path, symbols: Sequence[str], start: datetime, end: datetime) -> StepResult:
    daily = aggregate_daily(read_minutes(lake, symbols, start, end)).collect()
    return StepResult(daily, write_months(daily, lake, DAILY_RAW, "date", symbols, months_between(start, end)))


def latest_date(lake: Path, dataset: str, symbol: str, column: str = "date") -> date | None:
    """The newest day stored for a symbol, read from its newest partition only."""
    files = sorted((lake / dataset / f"symbol={symbol}").glob("year=*/month=*/part-0.parquet"))
    if not files:
        return None
    return pl.scan_parquet(files[-1]).select(pl.col(column).max()).collect().item()


def build_daily_filled(lake: Path, symbols: Sequence[str], start: datetime, end: datetime) -> StepResult:
    first = Month.of(start)
    for _ in range(FILLED_LOOKBACK_MONTHS):
        first = first.previous()
    months = months_between(first.start, end)
    daily = scan_months(lake, DAILY_RAW, symbols, months, DAILY_SCHEMA).collect()
    frames = []
    for symbol in symbols:
        rows = daily.filter(pl.col("symbol") == symbol)
        if rows.height == 0:
            continue
        # The calendar runs to the window's end when the series goes on later, else to its last candle,
        # so a gap at a month's end is filled by that month and not left to nobody.
        last_known = latest_date(lake, DAILY_RAW, symbol) or rows["date"].max()
        through = min(_as_date(end) - timedelta(days=1), last_known)
        frames.append(daily_filled(rows.lazy(), through).collect())
    context = pl.concat(frames) if frames else pl.DataFrame(schema=FILLED_SCHEMA)
    filled = context.filter(_window_filter("date", start, end))
    return StepResult(
        filled, write_months(filled, lake, DAILY_FILLED, "date", symbols, months_between(start, end)), context
    )


def build_prophet_input(lake: Path, symbols: Sequence[str], start: datetime, end: datetime) -> StepResult:
    months = months_between(start, end)
    filled = scan_months(lake, DAILY_FILLED, symbols, months, FILLED_SCHEMA)
    frame = prophet_input(filled).collect()
    return StepResult(frame, write_months(frame, lake, PROPHET_INPUT, "ds", symbols, months))


def read_dataset(lake: Path, dataset: str, schema: pl.Schema, symbols: Sequence[str]) -> pl.LazyFrame:
    """Every stored month of a dataset for the symbols (small daily datasets only)."""
    paths = [p for s in symbols for p in sorted((lake / dataset / f"symbol={s}").glob("year=*/month=*/part-0.parquet"))]
    return pl.scan_parquet(paths) if paths else pl.LazyFrame(schema=schema)

