"""The batch steps after ingestion, each over one time window of month partitions.

Each step lists its input months in the lake, computes on an engine (Polars here, or Spark:
:class:`crypto_assets.spark.engine.SparkEngine`) and rewrites its own months with the one shared writer, so
the files are the same whichever engine ran. The Dagster assets, the CLI and the benchmarks all call these,
so the logic exists once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import polars as pl

from crypto_assets.asset_names import DAILY_FILLED, DAILY_RAW, MINUTE_RAW, PROPHET_INPUT
from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.batch.transforms.filled import daily_filled
from crypto_assets.batch.transforms.prophet import prophet_input
from crypto_assets.lake.datasets import WriteSummary, scan_months, write_months
from crypto_assets.lake.layout import Month, existing_partitions, months_between
from crypto_assets.lake.location import scan_parquet
from crypto_assets.schema import DAILY_SCHEMA, FILLED_SCHEMA, MINUTE_SCHEMA, PROPHET_SCHEMA

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


class BatchEngine(Protocol):
    """Computes a step from the input's partition files (never empty); returns the rows in the dataset's schema."""

    name: str

    def daily_raw(self, minute_files: Sequence[Path]) -> pl.DataFrame: ...

    def daily_filled(self, daily_files: Sequence[Path], through: Mapping[str, date]) -> pl.DataFrame: ...

    def prophet_input(self, filled_files: Sequence[Path]) -> pl.DataFrame: ...


class PolarsEngine:
    name = "polars"

    def daily_raw(self, minute_files: Sequence[Path]) -> pl.DataFrame:
        # One symbol's files at a time (<symbol=S>/year=/month=/part): symbols share no day, and memory then
        # follows one symbol's window, not the range's. In symbol order, as one aggregation sorts them.
        by_symbol: dict[str, list[Path]] = {}
        for path in minute_files:
            by_symbol.setdefault(path.parents[2].name, []).append(path)
        frames = [
            aggregate_daily(scan_parquet(files, hive_partitioning=False)).collect()
            for _, files in sorted(by_symbol.items())
        ]
        return pl.concat(frames) if frames else pl.DataFrame(schema=DAILY_SCHEMA)

    def daily_filled(self, daily_files: Sequence[Path], through: Mapping[str, date]) -> pl.DataFrame:
        daily = scan_parquet(daily_files, hive_partitioning=False).collect()
        frames = []
        for symbol, last_day in through.items():
            rows = daily.filter(pl.col("symbol") == symbol)
            if rows.height:
                frames.append(daily_filled(rows.lazy(), last_day).collect())
        return pl.concat(frames) if frames else pl.DataFrame(schema=FILLED_SCHEMA)

    def prophet_input(self, filled_files: Sequence[Path]) -> pl.DataFrame:
        return prophet_input(scan_parquet(filled_files, hive_partitioning=False)).collect()


POLARS = PolarsEngine()


def read_minutes(lake: Path, symbols: Sequence[str], start: datetime, end: datetime) -> pl.LazyFrame:
    return scan_months(lake, MINUTE_RAW, symbols, months_between(start, end), MINUTE_SCHEMA)


def _input_files(lake: Path, dataset: str, symbols: Sequence[str], months: Sequence[Month]) -> list[Path]:
    return list(existing_partitions(lake, dataset, symbols, months))


def build_daily_raw(
    lake: Path, symbols: Sequence[str], start: datetime, end: datetime, engine: BatchEngine = POLARS
) -> StepResult:
    months = months_between(start, end)
    files = _input_files(lake, MINUTE_RAW, symbols, months)
    daily = engine.daily_raw(files) if files else pl.DataFrame(schema=DAILY_SCHEMA)
    return StepResult(daily, write_months(daily, lake, DAILY_RAW, "date", symbols, months))


def latest_date(lake: Path, dataset: str, symbol: str, column: str = "date") -> date | None:
    """The newest day stored for a symbol, read from its newest partition only."""
    files = sorted((lake / dataset / f"symbol={symbol}").glob("year=*/month=*/part-0.parquet"))
    if not files:
        return None
    return scan_parquet([files[-1]]).select(pl.col(column).max()).collect().item()


def latest_closed_date(lake: Path, dataset: str, symbol: str, today: date | None = None) -> date | None:
    """The newest stored day of a symbol before ``today`` (UTC): the newest day that is over."""
    today = today or datetime.now(UTC).date()
    files = sorted((lake / dataset / f"symbol={symbol}").glob("year=*/month=*/part-0.parquet"))
    for path in reversed(files):  # the newest partition may hold only today
        newest = scan_parquet([path]).filter(pl.col("date") < today).select(pl.col("date").max()).collect().item()
        if newest is not None:
            return newest
    return None


def calendar_ends(lake: Path, symbols: Sequence[str], end: datetime) -> dict[str, date]:
    """The last day of each stored symbol's calendar for a window ending at ``end``.

    The calendar runs to the window's end when the series goes on later, else to its last candle, so a gap
    at a month's end is filled by that month and not left to nobody.
    """
    window_last = _as_date(end) - timedelta(days=1)
    ends = {}
    for symbol in symbols:
        last_known = latest_date(lake, DAILY_RAW, symbol)
        if last_known is not None:
            ends[symbol] = min(window_last, last_known)
    return ends


def build_daily_filled(
    lake: Path, symbols: Sequence[str], start: datetime, end: datetime, engine: BatchEngine = POLARS
) -> StepResult:
    first = Month.of(start)
    for _ in range(FILLED_LOOKBACK_MONTHS):
        first = first.previous()
    files = _input_files(lake, DAILY_RAW, symbols, months_between(first.start, end))
    ends = calendar_ends(lake, symbols, end)
    context = engine.daily_filled(files, ends) if files else pl.DataFrame(schema=FILLED_SCHEMA)
    filled = context.filter(_window_filter("date", start, end))
    return StepResult(
        filled, write_months(filled, lake, DAILY_FILLED, "date", symbols, months_between(start, end)), context
    )


def build_prophet_input(
    lake: Path, symbols: Sequence[str], start: datetime, end: datetime, engine: BatchEngine = POLARS
) -> StepResult:
    months = months_between(start, end)
    files = _input_files(lake, DAILY_FILLED, symbols, months)
    frame = engine.prophet_input(files) if files else pl.DataFrame(schema=PROPHET_SCHEMA)
    return StepResult(frame, write_months(frame, lake, PROPHET_INPUT, "ds", symbols, months))


def read_dataset(lake: Path, dataset: str, schema: pl.Schema, symbols: Sequence[str]) -> pl.LazyFrame:
    """Every stored month of a dataset for the symbols (small daily datasets only)."""
    paths = [p for s in symbols for p in sorted((lake / dataset / f"symbol={s}").glob("year=*/month=*/part-0.parquet"))]
    return scan_parquet(paths) if paths else pl.LazyFrame(schema=schema)
