"""The backfill's datasets in the lake, month-partitioned like ``minute_raw``.

- ``minute_gaps``: the gap report (``GAP_SCHEMA``), rewritten per window by the ``minute_gaps`` asset;
- ``exchange_minutes``: every candle fetched from the exchange (``MINUTE_SCHEMA``, as received, valid or not),
  so fetched data survives a rebuild of ``minute_raw`` (which reads it as its lowest-priority source);
- ``exchange_empty``: ranges the exchange was asked for and had no valid candle in (``RANGE_SCHEMA``), so real
  outages are not asked for again on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from crypto_assets.batch.backfill.transforms import exchange_rows
from crypto_assets.batch.transforms.gaps import RANGE_SCHEMA
from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.layout import Month, existing_partitions, partition_path
from crypto_assets.lake.location import read_parquet, scan_parquet

EXCHANGE_MINUTES = "exchange_minutes"
EXCHANGE_EMPTY = "exchange_empty"


def read_partition(lake: Path, dataset: str, symbol: str, month: Month, schema: pl.Schema) -> pl.DataFrame:
    path = partition_path(lake, dataset, symbol, month)
    return read_parquet(path) if path.is_file() else pl.DataFrame(schema=schema)


def write_partition(frame: pl.DataFrame, lake: Path, dataset: str, symbol: str, month: Month) -> int:
    """Atomically replace one (symbol, month) file; bytes written."""
    return write_parquet_atomic(frame, partition_path(lake, dataset, symbol, month))


def read_ranges(lake: Path, dataset: str, symbols: Iterable[str], months: Sequence[Month]) -> pl.LazyFrame:
    """Stored ranges (``exchange_empty`` or the ranges columns of ``minute_gaps``) of the window."""
    paths = list(existing_partitions(lake, dataset, symbols, months))
    if not paths:
        return pl.LazyFrame(schema=RANGE_SCHEMA)
    return scan_parquet(paths).select(RANGE_SCHEMA.names())


def exchange_sources(
    lake: Path, symbols: Iterable[str], months: Sequence[Month], rank: int, latest_time: datetime
) -> list[tuple[Path, str, Callable[[], tuple[pl.LazyFrame, str]]]]:
    """The stored exchange candles of a window as extra ``minute_raw`` sources: (path, symbol, reader).

    A reader returns the validated rows (as :func:`crypto_assets.batch.minute_ingest.read_source` does for a
    file) and the format name.
    """
    sources = []
    for path in existing_partitions(lake, EXCHANGE_MINUTES, symbols, months):
        symbol = path.parent.parent.parent.name.removeprefix("symbol=")
        sources.append((path, symbol, exchange_reader(path, rank, latest_time)))
    return sources


def exchange_reader(path: Path, rank: int, latest_time: datetime) -> Callable[[], tuple[pl.LazyFrame, str]]:
    """The reader of one stored month of exchange candles (see :func:`exchange_sources`)."""

    def read() -> tuple[pl.LazyFrame, str]:
        return exchange_rows(scan_parquet([path]), str(path), rank, latest_time), EXCHANGE_MINUTES

    return read
