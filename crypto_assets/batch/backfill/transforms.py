"""Pure steps of the gap report and the exchange backfill, over Polars frames.

Ranges are half-open ``[gap_start, gap_end)`` on the minute grid, in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import polars as pl

from crypto_assets.batch.transforms.gaps import (
    MINUTE,
    RANGE_SCHEMA,
    TIME,
    merge_ranges,
    missing_ranges,
    range_minutes,
)
from crypto_assets.batch.transforms.minute import clean_minutes, with_reasons
from crypto_assets.lake.layout import Month
from crypto_assets.schema import MINUTE_SCHEMA, QUARANTINE_SCHEMA

# The gap report: each missing range, and whether the exchange was already asked and had no valid candle there.
GAP_SCHEMA = pl.Schema({**RANGE_SCHEMA, "exchange_empty": pl.Boolean})

PAGE_MINUTES = 1000  # Binance serves at most 1000 klines per request


def last_closed_minute_end(now: datetime) -> datetime:
    """Exclusive end of the closed minutes at ``now``: the running minute has no final candle yet."""
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def expected_spans(
    starts: Mapping[str, date | datetime], window_start: datetime, window_end: datetime, now: datetime
) -> pl.LazyFrame:
    """Per symbol, the minutes that should exist: from its configured start to the last closed minute,
    clipped to the window."""
    end = min(window_end, last_closed_minute_end(now))
    rows = []
    for symbol, first in starts.items():
        first = first if isinstance(first, datetime) else datetime(first.year, first.month, first.day, tzinfo=UTC)
        rows.append((symbol, max(first, window_start), end))
    return pl.LazyFrame(rows, schema={"symbol": pl.String, "span_start": TIME, "span_end": TIME}, orient="row")


def month_starts(start: datetime, end: datetime) -> list[datetime]:
    """The first instants of the months after ``start`` up to ``end``: where stored ranges are cut."""
    cuts, month = [], Month.of(start).next()
    while (cut := datetime(month.year, month.month, 1, tzinfo=UTC)) < end:
        cuts.append(cut)
        month = month.next()
    return cuts


def flag_known_empty(gaps: pl.LazyFrame, known_empty: pl.LazyFrame, cuts: Sequence[datetime]) -> pl.LazyFrame:
    """Split gaps where the known-empty ranges begin and end and at ``cuts``; flag the known-empty pieces.

    Every piece then lies in one month (when ``cuts`` are month starts) and is either entirely known to be
    empty at the exchange or entirely still to be asked for.
    """
    empty = merge_ranges(known_empty.select(RANGE_SCHEMA.names()))
    cut_series = pl.Series("t", list(cuts), dtype=TIME)
    cut_points = pl.LazyFrame(cut_series)
    points = pl.concat(
        [
            gaps.select("symbol", pl.col("gap_start").alias("t")),
            gaps.select("symbol", pl.col("gap_end").alias("t")),
            empty.select("symbol", pl.col("gap_start").alias("t")),
            empty.select("symbol", pl.col("gap_end").alias("t")),
            gaps.select("symbol").unique().join(cut_points, how="cross"),
        ]
    )
    segments = (
        points.unique()
        .sort("symbol", "t")
        .with_columns(pl.col("t").shift(-1).over("symbol").alias("end"))
        .filter(pl.col("end").is_not_null())
        .join_asof(
            gaps.select("symbol", "gap_start", "gap_end").sort("gap_start"),
            left_on="t",
            right_on="gap_start",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("t") < pl.col("gap_end"))
        .select("symbol", "t", "end")
        .join_asof(
            empty.select("symbol", pl.col("gap_start").alias("e_start"), pl.col("gap_end").alias("e_end")).sort(
                "e_start"
            ),
            left_on="t",
            right_on="e_start",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        .with_columns((pl.col("e_end").is_not_null() & (pl.col("t") < pl.col("e_end"))).alias("exchange_empty"))
        .sort("symbol", "t")
    )
    same_symbol = pl.col("symbol") == pl.col("symbol").shift(1)
    continues = (
        same_symbol
        & (pl.col("t") == pl.col("end").shift(1))
        & (pl.col("exchange_empty") == pl.col("exchange_empty").shift(1))
        & ~pl.col("t").is_in(cut_series.implode())
    )
    return (
        segments.with_columns((~continues.fill_null(False)).cum_sum().alias("_run"))
        .group_by("_run")
        .agg(
            pl.col("symbol").first(),
            pl.col("t").min().alias("gap_start"),
            pl.col("end").max().alias("gap_end"),
            pl.col("exchange_empty").first(),
        )
        .with_columns(range_minutes(pl.col("gap_start"), pl.col("gap_end")).alias("minutes"))
        .select(GAP_SCHEMA.names())
        .sort("symbol", "gap_start")
        .cast(dict(GAP_SCHEMA))
    )


def gap_report(
    minutes: pl.LazyFrame, spans: pl.LazyFrame, known_empty: pl.LazyFrame, cuts: Sequence[datetime]
) -> pl.LazyFrame:
    """The missing minute ranges of each symbol's expected span, cut at ``cuts``, known-empty pieces flagged."""
    return flag_known_empty(missing_ranges(minutes, spans), known_empty, cuts)


def within_ranges(frame: pl.LazyFrame, ranges: pl.LazyFrame) -> pl.LazyFrame:
    """Rows whose ``open_time`` lies in one of the (non-overlapping) ranges of their symbol."""
    bounds = ranges.select("symbol", pl.col("gap_start").alias("_start"), pl.col("gap_end").alias("_end"))
    return (
        frame.sort("open_time")
        .join_asof(
            bounds.sort("_start"),
            left_on="open_time",
            right_on="_start",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("open_time") < pl.col("_end"))
        .drop("_start", "_end")
    )


def unfilled_ranges(requested: pl.LazyFrame, received: pl.LazyFrame) -> pl.LazyFrame:
    """The requested ranges, or parts of them, for which no valid candle came back."""
    spans = requested.select("symbol", pl.col("gap_start").alias("span_start"), pl.col("gap_end").alias("span_end"))
    return missing_ranges(received, spans)


def exchange_rows(frame: pl.LazyFrame, source_file: str, rank: int, latest_time: datetime) -> pl.LazyFrame:
    """Candles from the exchange (``MINUTE_SCHEMA``) validated with the same rules as file rows.

    ``line`` is the row number in the stored ``exchange_minutes`` partition, so a quarantined candle names
    the file and row it is kept in.
    """
    return with_reasons(
        frame.select(MINUTE_SCHEMA.names()).with_columns(
            pl.lit(False).alias("extra_fields"),
            pl.lit(source_file).alias("source_file"),
            pl.lit(rank).alias("source_rank"),
            (pl.int_range(pl.len(), dtype=pl.Int64) + 1).alias("line"),
        ),
        latest_time,
    )


def merge_minutes(existing: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """``existing`` plus the minutes of ``new`` it lacks, one row per (symbol, open_time), sorted."""

    def ranked(frame: pl.DataFrame, rank: int) -> pl.DataFrame:
        return frame.select(MINUTE_SCHEMA.names()).with_columns(
            pl.lit(rank, dtype=pl.Int32).alias("source_rank"),
            pl.lit(0, dtype=pl.Int64).alias("line"),
            pl.lit(None, dtype=pl.String).alias("reason"),
        )

    return clean_minutes(pl.concat([ranked(existing, 0), ranked(new, 1)]))


def replace_quarantine(existing: pl.DataFrame, source_file: str, rows: pl.DataFrame) -> pl.DataFrame:
    """A quarantine partition with the rows of ``source_file`` replaced by ``rows``, in the ingest order."""
    kept = existing.filter(pl.col("source_file") != source_file)
    return pl.concat([kept, rows.select(QUARANTINE_SCHEMA.names())]).sort("symbol", "open_time", "source_file", "line")


@dataclass(frozen=True)
class Chunk:
    """Work committed at once: missing ranges of one symbol and month, and the requests that cover them."""

    symbol: str
    month: Month
    gaps: tuple[tuple[datetime, datetime], ...]
    fetches: tuple[tuple[datetime, datetime], ...]  # gaps close together are asked for in one range

    @property
    def minutes(self) -> int:
        return sum(_minutes(a, b) for a, b in self.gaps)

    def gap_frame(self) -> pl.DataFrame:
        return ranges_frame((self.symbol, a, b) for a, b in self.gaps)


def _minutes(start: datetime, end: datetime) -> int:
    return int((end - start) / MINUTE)


def _pages(minutes: int, page_minutes: int) -> int:
    return math.ceil(minutes / page_minutes)


def plan_chunks(gaps: pl.DataFrame, chunk_minutes: int, page_minutes: int = PAGE_MINUTES) -> list[Chunk]:
    """Cut the gaps still to fetch into chunks of at most ``chunk_minutes`` requested minutes.

    Within a chunk, a gap is asked for together with the previous one when that needs no more requests
    than asking for both apart (candles in between are already stored and are dropped on arrival).
    """
    if chunk_minutes < 1:
        raise ValueError("chunk_minutes must be at least 1")
    todo = gaps.filter(~pl.col("exchange_empty")) if "exchange_empty" in gaps.columns else gaps
    groups = todo.sort("symbol", "gap_start").with_columns(
        pl.col("gap_start").dt.year().alias("_y"), pl.col("gap_start").dt.month().alias("_m")
    )
    chunks: list[Chunk] = []
    for (symbol, year, month), rows in groups.group_by("symbol", "_y", "_m", maintain_order=True):
        ranges = rows.select("gap_start", "gap_end").iter_rows()
        chunks += _month_chunks(symbol, Month(year, month), ranges, chunk_minutes, page_minutes)
    return chunks


def _month_chunks(
    symbol: str,
    month: Month,
    ranges: Iterable[tuple[datetime, datetime]],
    chunk_minutes: int,
    page_minutes: int,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    pieces: list[tuple[datetime, datetime]] = []
    fetches: list[tuple[datetime, datetime]] = []
    used = 0
    for start, end in ranges:
        while start < end:
            if used >= chunk_minutes:
                chunks.append(Chunk(symbol, month, tuple(pieces), tuple(fetches)))
                pieces, fetches, used = [], [], 0
            room = chunk_minutes - used
            piece_end = min(end, start + room * MINUTE)
            pieces.append((start, piece_end))
            if fetches:
                first, last_end = fetches[-1]
                extra = _minutes(last_end, piece_end)
                joined = _pages(_minutes(first, piece_end), page_minutes)
                apart = _pages(_minutes(first, last_end), page_minutes) + _pages(
                    _minutes(start, piece_end), page_minutes
                )
                if extra <= room and joined <= apart:
                    fetches[-1] = (first, piece_end)
                    used += extra
                    start = piece_end
                    continue
            fetches.append((start, piece_end))
            used += _minutes(start, piece_end)
            start = piece_end
    if pieces:
        chunks.append(Chunk(symbol, month, tuple(pieces), tuple(fetches)))
    return chunks


def ranges_frame(rows: Iterable[tuple[str, datetime, datetime]]) -> pl.DataFrame:
    return pl.DataFrame([(s, a, b, _minutes(a, b)) for s, a, b in rows], schema=RANGE_SCHEMA, orient="row")
