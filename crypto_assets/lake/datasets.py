"""Read and write month-partitioned datasets in the lake."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.layout import Month, existing_partitions, partition_path
from crypto_assets.lake.location import scan_parquet

WRITE_THREADS = min(4, (os.cpu_count() or 1) + 1)


@dataclass
class WriteSummary:
    """What one write of a dataset produced; it becomes Dagster materialization metadata."""

    rows: int = 0
    bytes_written: int = 0
    files: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def merge(self, other: WriteSummary) -> WriteSummary:
        return WriteSummary(
            self.rows + other.rows,
            self.bytes_written + other.bytes_written,
            self.files + other.files,
            self.removed + other.removed,
        )


def scan_months(
    lake: Path, dataset: str, symbols: Iterable[str], months: Iterable[Month], schema: pl.Schema
) -> pl.LazyFrame:
    """Lazily read the partitions that exist; an empty frame with ``schema`` when none do."""
    paths = list(existing_partitions(lake, dataset, symbols, months))
    if not paths:
        return pl.LazyFrame(schema=schema)
    return scan_parquet(paths, hive_partitioning=False)


def write_months(
    frame: pl.DataFrame,
    lake: Path,
    dataset: str,
    time_column: str,
    symbols: Iterable[str],
    months: Iterable[Month],
) -> WriteSummary:
    """Replace every (symbol, month) partition of the window with the rows of ``frame``.

    Partitions of the window that have no rows are removed, so re-materializing a window always leaves
    exactly what the inputs say, whatever was there before.
    """
    summary = WriteSummary()
    parts = _month_slices(frame, time_column) if frame.height else {}
    writes: list[tuple[pl.DataFrame, Path]] = []
    for symbol in symbols:
        for month in months:
            path = partition_path(lake, dataset, symbol, month)
            part = parts.get((symbol, month.year, month.month))
            if part is not None:
                writes.append((part, path))
            elif path.exists():
                path.unlink()
                summary.removed.append(path)
    # Polars releases the GIL while encoding, so a few files at once keep both cores busy.
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        sizes = list(pool.map(lambda job: write_parquet_atomic(*job), writes))
    summary.bytes_written = sum(sizes)
    summary.rows = sum(part.height for part, _ in writes)
    summary.files = [path for _, path in writes]
    return summary


def _month_slices(frame: pl.DataFrame, time_column: str) -> dict[tuple[str, int, int], pl.DataFrame]:
    """Zero-copy slices of ``frame`` per (symbol, year, month); sorts only if rows are not grouped yet."""
    if _one_symbol(frame):
        return _one_symbol_month_slices(frame, time_column)
    keys = frame.select("symbol", pl.col(time_column).dt.year().alias("y"), pl.col(time_column).dt.month().alias("m"))
    runs = keys.with_columns(pl.struct("symbol", "y", "m").rle_id().alias("run"))
    if runs["run"].n_unique() != keys.unique().height:
        frame = frame.sort("symbol", time_column)
        return _month_slices(frame, time_column)
    bounds = (
        runs.with_row_index("offset")
        .group_by("run", maintain_order=True)
        .agg(pl.col("symbol", "y", "m").first(), pl.col("offset").first(), pl.len().alias("n"))
    )
    return {(symbol, y, m): frame.slice(offset, n) for _, symbol, y, m, offset, n in bounds.iter_rows()}


def _one_symbol(frame: pl.DataFrame) -> bool:
    return bool(frame.select((pl.col("symbol") == pl.col("symbol").first()).all()).item())


def _one_symbol_month_slices(frame: pl.DataFrame, time_column: str) -> dict[tuple[str, int, int], pl.DataFrame]:
    """The same for rows of one symbol (how the ingest writes): no strings compared row to row."""
    times = frame[time_column]
    if times.null_count() == 0 and times.is_sorted():
        return _sorted_month_slices(frame, time_column)
    t = pl.col(time_column)
    month = frame.select((t.dt.year().cast(pl.Int32) * 12 + t.dt.month().cast(pl.Int32) - 1).alias("k"))["k"]
    starts = month.rle().struct.unnest()  # (len, value) per run of equal months
    if starts.height != month.n_unique():
        return _one_symbol_month_slices(frame.sort(time_column), time_column)
    symbol = frame["symbol"][0]
    out, offset = {}, 0
    for n, k in starts.iter_rows():
        if k is not None:  # a row without a time belongs to no month (and is never written), as above
            out[(symbol, k // 12, k % 12 + 1)] = frame.slice(offset, n)
        offset += n
    return out


def _sorted_month_slices(frame: pl.DataFrame, time_column: str) -> dict[tuple[str, int, int], pl.DataFrame]:
    """Rows of one symbol in time order: a binary search per month start, no per-row calendar arithmetic."""
    times = frame[time_column]
    first, last = times[[0, -1]].dt.truncate("1mo")
    if times.dtype == pl.Date:
        starts = pl.date_range(first, last, "1mo", eager=True)
    else:
        starts = pl.datetime_range(
            first, last, "1mo", time_unit=times.dtype.time_unit, time_zone=times.dtype.time_zone, eager=True
        )
    offsets = times.search_sorted(starts, side="left").to_list() + [frame.height]
    symbol = frame["symbol"][0]
    return {
        (symbol, start.year, start.month): frame.slice(offset, end - offset)
        for start, offset, end in zip(starts.to_list(), offsets[:-1], offsets[1:], strict=True)
        if end > offset
    }
