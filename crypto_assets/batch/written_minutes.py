"""minute_raw's checks and metadata for a window of any length, read back from the lake one symbol at a time.

A range backfill writes every month of its range in one step. Holding all of the rows it wrote for its checks
made the step's memory follow the whole range (8.4 GB for 50 symbols over two years, ``bench/scale_bench.py``).
Each symbol's rows of the window are read back from the files just written, judged, summarised and dropped, so
memory follows one symbol's window. Symbols share no row, so the parts add up to the checks on the whole window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from crypto_assets import quality
from crypto_assets.batch import checks
from crypto_assets.batch.metadata import PREVIEW_ROWS, symbol_stats
from crypto_assets.batch.minute_ingest import MINUTE_DATASET
from crypto_assets.lake.datasets import scan_months
from crypto_assets.lake.layout import Month
from crypto_assets.schema import MINUTE_SCHEMA

KEYS = ["symbol", "open_time"]


@dataclass
class WrittenMinutes:
    stats: pl.DataFrame  # symbol, len, first, last (metadata.symbol_stats)
    preview: pl.DataFrame  # the window's first rows
    schema: quality.CheckOutcome
    unique: quality.CheckOutcome
    ohlc: quality.CheckOutcome
    completeness: checks.Completeness


def read_symbol_window(lake: Path, symbol: str, months: Sequence[Month]) -> pl.DataFrame:
    return scan_months(lake, MINUTE_DATASET, [symbol], months, MINUTE_SCHEMA).collect()


def _symbol_windows(lake: Path, symbols: Sequence[str], months: Sequence[Month]) -> Iterator[pl.DataFrame]:
    """Each symbol's rows of the window, in the order the ingest writes them; no symbols is one empty window."""
    if not symbols:
        yield pl.DataFrame(schema=MINUTE_SCHEMA)
    for symbol in sorted(symbols):
        yield read_symbol_window(lake, symbol, months)


def judge_written_minutes(lake: Path, symbols: Sequence[str], months: Sequence[Month]) -> WrittenMinutes:
    schema, unique, ohlc, completeness, stats, heads = [], [], [], [], [], []
    for frame in _symbol_windows(lake, symbols, months):
        schema.append(checks.schema_matches(frame, MINUTE_SCHEMA))
        unique.append(checks.unique_keys(frame, KEYS))
        ohlc.append(checks.ohlc_consistent(frame))
        completeness.append(checks.Completeness.of(frame))
        stats.append(symbol_stats(frame, "open_time"))
        if sum(h.height for h in heads) < PREVIEW_ROWS:
            heads.append(frame.head(PREVIEW_ROWS))
    return WrittenMinutes(
        pl.concat(stats),
        pl.concat(heads).head(PREVIEW_ROWS),
        quality.add_up(schema),
        quality.add_up(unique),
        quality.add_up(ohlc),
        checks.Completeness.concat(completeness),
    )
