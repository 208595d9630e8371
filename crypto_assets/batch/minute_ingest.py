"""Build the ``minute_raw`` master dataset (and its ``quarantine``) for a time window from source files.

This is the I/O shell around the pure transforms in :mod:`crypto_assets.batch.transforms.minute`: the Dagster
asset and the ``crypto-assets ingest`` command both call :func:`ingest_window`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.batch.backfill.lock import minute_raw_lock
from crypto_assets.batch.backfill.store import exchange_sources
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.batch.sources.formats import detect_layout, read_head, read_layout
from crypto_assets.batch.transforms.minute import (
    EARLIEST_TIME,
    MINUTE_SCHEMA,
    QUARANTINE_SCHEMA,
    clean_minutes,
    drop_blank_lines,
    parse_open_time,
    quarantine_rows,
    with_reasons,
)
from crypto_assets.lake.atomic import write_parquet_atomic
from crypto_assets.lake.datasets import WriteSummary, write_months
from crypto_assets.lake.layout import months_between

MINUTE_DATASET = "minute_raw"
QUARANTINE_DATASET = "quarantine"
UNPARSED_FILE = "unparsed.parquet"


@dataclass
class SourceReport:
    path: str
    symbol: str
    format: str | None = None
    rows: int = 0
    quarantined: int = 0
    error: str | None = None


@dataclass
class IngestResult:
    minute: WriteSummary
    quarantine: WriteSummary
    frame: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MINUTE_SCHEMA))  # rows written
    sources: list[SourceReport] = field(default_factory=list)
    rows_read: int = 0
    duplicates_removed: int = 0
    quarantined: int = 0

    @property
    def failed_sources(self) -> list[SourceReport]:
        return [s for s in self.sources if s.error]


def read_source(source: SourceFile, latest_time: datetime) -> tuple[pl.LazyFrame, str]:
    """One file as validated rows (good and bad) with symbol and provenance; raises SourceFormatError."""
    head, member = read_head(source.path)
    layout = detect_layout(source.path, head)
    raw = read_layout(source.path, layout, member).lazy()
    frame = raw.with_columns(
        pl.lit(source.symbol).alias("symbol"),
        pl.lit(str(source.path)).alias("source_file"),
        pl.lit(source.rank).alias("source_rank"),
    )
    frame = with_reasons(parse_open_time(drop_blank_lines(frame), layout.epoch_time), latest_time)
    return frame, layout.format.value


def ingest_window(
    sources: Sequence[SourceFile],
    lake: Path,
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    latest_time: datetime | None = None,
    progress: Callable[[SourceReport], None] | None = None,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> IngestResult:
    """Rewrite minute_raw and quarantine for every (symbol, month) in [start, end).

    A file that cannot be read at all is reported and skipped; its neighbours are still ingested. The
    window's stored exchange candles (``exchange_minutes``) are read after the files, so backfilled minutes
    survive a rebuild without ever replacing a file's row.

    The ingest holds the lake's ``minute_raw`` lock, shared with the exchange backfill, so the two never
    interleave: it waits up to ``lock_timeout`` seconds for a running backfill (telling ``on_wait``), then
    raises :class:`crypto_assets.batch.backfill.lock.LakeBusyError` naming the lock and its holder.
    """
    with minute_raw_lock(lake, "minute_raw ingest", lock_timeout, on_wait):
        return _ingest_window(sources, lake, symbols, start, end, latest_time, progress)


def _ingest_window(
    sources: Sequence[SourceFile],
    lake: Path,
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    latest_time: datetime | None,
    progress: Callable[[SourceReport], None] | None,
) -> IngestResult:
    latest_time = latest_time or datetime.now(UTC) + timedelta(days=1)
    months = months_between(start, end)
    good_parts: list[pl.DataFrame] = []
    bad_parts: list[pl.DataFrame] = []
    unparsed: list[pl.DataFrame] = []
    reports: list[SourceReport] = []
    in_window = (pl.col("open_time") >= start) & (pl.col("open_time") < end)
    # Rows whose time is missing or impossible belong to no month; they are kept apart, per symbol.
    no_month = pl.col("open_time").is_null() | (pl.col("open_time") < EARLIEST_TIME) | (pl.col("open_time") > latest_time)

    readers = [(s.path, s.symbol, lambda s=s: read_source(s, latest_time)) for s in sources]
    # Candles fetched from the exchange fill only what no file has: they rank after every file.
    exchange_rank = max((s.rank for s in sources), default=-1) + 1
    readers += exchange_sources(lake, symbols, months, exchange_rank, latest_time)

    for path, symbol, read in readers:
        report = SourceReport(str(path), symbol)
        try:
            frame, report.format = read()
            rows = frame.filter(in_window | no_month).collect()
        except (SourceFormatError, pl.exceptions.PolarsError, OSError) as exc:
            report.error = str(exc) if isinstance(exc, SourceFormatError) else f"{path}: {exc}"
            reports.append(report)
            if progress:
                progress(report)
            continue
        # Only the columns dedup needs travel on: the raw frame is twice as wide.
        good_parts.append(rows.filter(pl.col("reason").is_null()).select(*MINUTE_SCHEMA.names(), "source_rank", "line", "reason"))
        bad = quarantine_rows(rows.lazy()).collect()
        bad_parts.append(bad.filter(~no_month))
        unparsed.append(bad.filter(no_month))
        report.rows, report.quarantined = rows.height, bad.height
        reports.append(report)
        if progress:
            progress(report)

    good = pl.concat(good_parts) if good_parts else pl.DataFrame()
    del good_parts
    good_rows = good.height
    clean = clean_minutes(good) if good_rows else pl.DataFrame(schema=MINUTE_SCHEMA)
    del good
    quarantine = pl.concat(bad_parts) if bad_parts else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    quarantine = quarantine.sort("symbol", "open_time", "source_file", "line")

    minute_summary = write_months(clean, lake, MINUTE_DATASET, "open_time", symbols, months)
    quarantine_summary = write_months(quarantine, lake, QUARANTINE_DATASET, "open_time", symbols, months)
    quarantine_summary = quarantine_summary.merge(_write_unparsed(unparsed, lake, symbols))
    return IngestResult(
        minute=minute_summary,
        quarantine=quarantine_summary,
        sources=reports,
        rows_read=sum(r.rows for r in reports),
        duplicates_removed=good_rows - clean.height,
        frame=clean,
        quarantined=sum(r.quarantined for r in reports),
    )


def _write_unparsed(parts: list[pl.DataFrame], lake: Path, symbols: Sequence[str]) -> WriteSummary:
    """Rows without a usable time belong to no month; they are kept per symbol beside the months."""
    summary = WriteSummary()
    frame = pl.concat(parts) if parts else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    for symbol in symbols:
        rows = frame.filter(pl.col("symbol") == symbol).sort("source_file", "line")
        path = lake / QUARANTINE_DATASET / f"symbol={symbol}" / UNPARSED_FILE
        if rows.height:
            summary.bytes_written += write_parquet_atomic(rows, path)
            summary.rows += rows.height
            summary.files.append(path)
        elif path.exists():
            path.unlink()
            summary.removed.append(path)
    return summary
