"""Read and write month-partitioned datasets in the lake."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.layout import Month, existing_partitions, partition_path


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
    return pl.scan_parquet(paths, hive_partitioning=False)


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
    keyed = frame.with_columns(
        pl.col(time_column).dt.year().alias("__year"), pl.col(time_column).dt.month().alias("__month")
    )
    groups = keyed.partition_by(["symbol", "__year", "__month"], as_dict=True)
    for symbol in symbols:
        for month in months:
            path = partition_path(lake, dataset, symbol, month)
            part = groups.get((symbol, month.year, month.month))
            if part is None or part.height == 0:
                if path.exists():
                    path.unlink()
                    summary.removed.append(path)
                continue
            summary.bytes_written += write_parquet_atomic(part.drop("__year", "__month"), path)
            summary.rows += part.height
            summary.files.append(path)
    return summary
