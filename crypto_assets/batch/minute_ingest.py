"""Merge source files into the ``minute_raw`` master dataset (with ``quarantine`` and ``minute_conflicts``).

This is the I/O shell around the pure transforms in :mod:`crypto_assets.batch.transforms.minute` and
:mod:`crypto_assets.batch.transforms.merge`. An ingest is a merge: it adds rows to the months it touches and
never removes a row it was not given a replacement for. Where versions of a minute disagree, precedence is:

1. files ingested with ``crypto-assets ingest``, the latest ingest first (the landing manifest's order);
2. files configured under ``[[sources]]`` (or the synthetic default), in the order listed;
3. what ``minute_raw`` held before;
4. candles fetched from the exchange (``exchange_minutes``), which only fill minutes no file has.

Every losing version that differs from the winner is kept in ``minute_conflicts`` with both sources named.
The Dagster asset calls :func:`ingest_window`; ``crypto-assets ingest`` calls :func:`ingest_files`. Both hold
the lake's ``minute_raw`` lock for the whole list-merge-write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.asset_names import MINUTE_RAW
from crypto_assets.batch.backfill.lock import minute_raw_lock
from crypto_assets.batch.backfill.store import EXCHANGE_EMPTY, EXCHANGE_MINUTES, exchange_sources
from crypto_assets.batch.landing import Landed, LandingEntry, Manifest, land
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.batch.sources.formats import detect_layout, read_head, read_layout
from crypto_assets.batch.transforms.merge import CONFLICT_SCHEMA, merge_ranked, name_conflicts, union_conflicts
from crypto_assets.batch.transforms.minute import (
    EARLIEST_TIME,
    check_symbols,
    drop_blank_lines,
    parse_open_time,
    quarantine_rows,
    with_reasons,
)
from crypto_assets.lake.atomic import remove_stray_temps, write_parquet_atomic
from crypto_assets.lake.datasets import WriteSummary, scan_months, write_months
from crypto_assets.lake.layout import Month, months_between
from crypto_assets.lake.location import read_parquet
from crypto_assets.schema import MINUTE_SCHEMA, QUARANTINE_SCHEMA

MINUTE_DATASET = MINUTE_RAW  # the asset writes the dataset of its name
QUARANTINE_DATASET = "quarantine"
CONFLICTS_DATASET = "minute_conflicts"
EARLIER_LAKE = "minute_raw (rows stored before this merge)"
UNPARSED_FILE = "unparsed.parquet"
READ_ERRORS = (SourceFormatError, pl.exceptions.PolarsError, OSError)  # a source that cannot be read is skipped


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
    conflicts: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CONFLICT_SCHEMA))  # found now
    landed: list[Landed] = field(default_factory=list)  # ingest_files: each file and whether it was new
    stray_temps_removed: int = 0

    @property
    def failed_sources(self) -> list[SourceReport]:
        return [s for s in self.sources if s.error]

    def conflict_summary(self, max_listed: int = 10) -> str:
        """Conflicts per (losing source, kept source), for logs and metadata."""
        if not self.conflicts.height:
            return "none"
        pairs = self.conflicts.group_by("source", "kept_source").len().sort("len", descending=True)
        return "\n".join(
            f"{n:,} minute(s): kept {kept} over {lost}" for lost, kept, n in pairs.head(max_listed).iter_rows()
        )


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
    frame = check_symbols(drop_blank_lines(frame), source.symbol)
    frame = with_reasons(parse_open_time(frame, layout.epoch_time), latest_time)
    return frame, layout.format.value


@dataclass
class _Reader:
    """One source of rows in a merge: its precedence (``rank``, lower wins) and how conflicts name it."""

    path: Path
    symbol: str
    rank: int
    label: str
    read: Callable[[], tuple[pl.LazyFrame, str]]


def _source_reader(source: SourceFile, label: str, latest_time: datetime) -> _Reader:
    return _Reader(source.path, source.symbol, source.rank, label, lambda: read_source(source, latest_time))


def source_labels(landing: Path | None) -> dict[Path, str]:
    """How conflicts name a landed file: by its ingest (other files are named by their path)."""
    if landing is None:
        return {}
    manifest = Manifest.load(landing)
    return {manifest.path_of(e): e.label() for e in manifest.entries}


def month_filters(months: Sequence[Month], latest_time: datetime) -> tuple[pl.Expr, pl.Expr]:
    """(the rows inside the months, the rows whose time is missing or impossible and so belong to no month)."""
    start = datetime(months[0].year, months[0].month, 1, tzinfo=UTC)
    last = months[-1].next()
    end = datetime(last.year, last.month, 1, tzinfo=UTC)
    in_window = (pl.col("open_time") >= start) & (pl.col("open_time") < end)
    no_month = (
        pl.col("open_time").is_null() | (pl.col("open_time") < EARLIEST_TIME) | (pl.col("open_time") > latest_time)
    )
    return in_window, no_month


def read_ranked(read: Callable[[], tuple[pl.LazyFrame, str]], rank: int, keep: pl.Expr) -> tuple[pl.DataFrame, str]:
    """A source's validated rows that ``keep`` selects, with its precedence; raises what its reader raises."""
    frame, format_name = read()
    return frame.filter(keep).with_columns(pl.lit(rank, pl.Int32).alias("source_rank")).collect(), format_name


def read_error(path: Path | str, exc: Exception) -> str:
    return str(exc) if isinstance(exc, SourceFormatError) else f"{path}: {exc}"


def split_rows(rows: pl.DataFrame, no_month: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(good rows with their rank and line for the merge, quarantined rows of a month, rows of no month)."""
    # Only the columns the merge needs travel on: the raw frame is twice as wide.
    good = rows.filter(pl.col("reason").is_null() & ~no_month).select(*MINUTE_SCHEMA.names(), "source_rank", "line")
    bad = quarantine_rows(rows.lazy()).collect()
    return good, bad.filter(~no_month), bad.filter(no_month)


def lake_roots(lake: Path, landing: Path | None) -> list[Path]:
    """The folders only writers holding the minute_raw lock write to."""
    roots = [
        lake / d for d in (MINUTE_DATASET, QUARANTINE_DATASET, CONFLICTS_DATASET, EXCHANGE_MINUTES, EXCHANGE_EMPTY)
    ]
    return roots + ([landing] if landing is not None else [])


@contextmanager
def ingest_lock(
    lake: Path,
    landing: Path | None,
    purpose: str = "minute_raw ingest",
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[int]:
    """Hold the lake's minute_raw lock and first remove what killed writers left; yields how many files that was.

    Only a holder of the lock may remove temporary files: another writer's live ones would go from under it.
    """
    with minute_raw_lock(lake, purpose, lock_timeout, on_wait):
        yield len(remove_stray_temps(lake_roots(lake, landing)))


@dataclass(frozen=True)
class MergeWindow:
    """Where and what an ingest merges: the lake, the symbols, the months, the newest plausible time, and the
    names conflicts give the landed files."""

    lake: Path
    symbols: Sequence[str]
    months: list[Month]
    latest_time: datetime
    labels: dict[Path, str]


Merge = Callable[[Sequence[SourceFile], MergeWindow, Callable[[SourceReport], None] | None, bool], IngestResult]


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
    landing: Path | None = None,
    keep_rows: bool = True,
    merge: Merge | None = None,
) -> IngestResult:
    """Merge the rows of ``sources`` into minute_raw for every (symbol, month) in [start, end).

    ``sources`` are ranked by precedence (``rank`` 0 wins); see the module docstring for the order the
    project uses. Rows already in minute_raw stay unless a source has a version of the same minute; the
    window's stored exchange candles fill only what no file and no stored row has. A file that cannot be read
    at all is reported and skipped; its neighbours are still merged. With ``landing``, files from the landing
    folder are named by their ingest in conflicts.

    The merge holds the lake's ``minute_raw`` lock, shared with the exchange backfill, so the two never
    interleave: it waits up to ``lock_timeout`` seconds for a running backfill (telling ``on_wait``), then
    raises :class:`crypto_assets.batch.backfill.lock.LakeBusyError` naming the lock and its holder.

    ``keep_rows=False`` leaves ``frame`` empty: the rows written are not kept, so memory follows one symbol's
    window rather than the whole window (:mod:`crypto_assets.batch.written_minutes` reads them back).
    ``merge`` does the reading and merging under the lock: :func:`polars_merge` by default, the Spark
    engine's on a session (:func:`crypto_assets.spark.ingest.spark_merge`).
    """
    merge = merge or polars_merge
    latest_time = latest_time or datetime.now(UTC) + timedelta(days=1)
    with ingest_lock(lake, landing, lock_timeout=lock_timeout, on_wait=on_wait) as removed:
        window = MergeWindow(lake, symbols, months_between(start, end), latest_time, source_labels(landing))
        result = merge(sources, window, progress, keep_rows)
        result.stray_temps_removed = removed
        return result


def polars_merge(
    sources: Sequence[SourceFile],
    window: MergeWindow,
    progress: Callable[[SourceReport], None] | None,
    keep_rows: bool,
) -> IngestResult:
    """The merge in this process, month by month."""
    readers = [_source_reader(s, window.labels.get(s.path, str(s.path)), window.latest_time) for s in sources]
    return _merge_months(
        readers, window.lake, window.symbols, window.months, window.latest_time, progress, keep_rows=keep_rows
    )


def ingest_files(
    files: Sequence[SourceFile],
    lake: Path,
    landing: Path,
    symbols: Sequence[str],
    latest_time: datetime | None = None,
    progress: Callable[[SourceReport], None] | None = None,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> IngestResult:
    """Land ``files`` (independent checksummed copies, see :mod:`crypto_assets.batch.landing`) and merge them.

    All under the lake's lock: removing a killed writer's temporary files, landing, and merging every landed
    file not merged yet (this call's, and any a killed ingest left), each month touched once. The latest
    ingest wins a conflicting minute. A file whose bytes were already ingested for its symbol is a no-op,
    told in ``landed``.
    """
    latest_time = latest_time or datetime.now(UTC) + timedelta(days=1)
    with ingest_lock(lake, landing, lock_timeout=lock_timeout, on_wait=on_wait) as removed:
        manifest = Manifest.load(landing, tidy=True)
        landed, failed = [], []
        for source in files:
            try:
                landed.append(land(source, manifest))
            except OSError as exc:
                failed.append(SourceReport(str(source.path), source.symbol, error=f"{source.path}: {exc}"))
        manifest.save()
        result = _merge_pending(manifest, lake, symbols, latest_time, progress)
        result.sources = failed + result.sources
        result.landed = landed
        result.stray_temps_removed = removed
        return result


def rebuild_minute_raw(lake: Path, landing: Path, symbols: Sequence[str], latest_time: datetime | None = None) -> None:
    """Rebuild minute_raw, quarantine and minute_conflicts from the landing folder and ``exchange_minutes``.

    Replays the manifest's ingests in order, so it gives exactly the lake the sequence of ingests gave.
    """
    latest_time = latest_time or datetime.now(UTC) + timedelta(days=1)
    with ingest_lock(lake, landing, "minute_raw rebuild"):
        for dataset in (MINUTE_DATASET, QUARANTINE_DATASET, CONFLICTS_DATASET):
            for symbol in symbols:
                for path in sorted((lake / dataset / f"symbol={symbol}").rglob("*.parquet")):
                    path.unlink()
        manifest = Manifest.load(landing, tidy=True)
        for entry in manifest.entries:
            entry.merged = False
        for entry in sorted(manifest.entries, key=lambda e: e.order):
            _merge_pending(manifest, lake, symbols, latest_time, None, only=[entry])
        # Fetched candles of months no file touches.
        for symbol in symbols:
            folder = lake / EXCHANGE_MINUTES / f"symbol={symbol}"
            months = sorted(
                Month(int(p.parent.parent.name.removeprefix("year=")), int(p.parent.name.removeprefix("month=")))
                for p in folder.glob("year=*/month=*/part-0.parquet")
            )
            _merge_months([], lake, [symbol], months, latest_time, None)


def _merge_pending(
    manifest: Manifest,
    lake: Path,
    symbols: Sequence[str],
    latest_time: datetime,
    progress: Callable[[SourceReport], None] | None,
    only: Sequence[LandingEntry] | None = None,
) -> IngestResult:
    """Merge the landed files not merged yet into the months they touch, then mark them merged."""
    pending = sorted(only if only is not None else manifest.pending, key=lambda e: e.order, reverse=True)
    result = IngestResult(WriteSummary(), WriteSummary())
    frames: dict[int, tuple[pl.DataFrame, str]] = {}
    for entry in list(pending):
        source = SourceFile(manifest.path_of(entry), entry.symbol, 0)
        report = SourceReport(str(source.path), entry.symbol)
        try:
            if entry.symbol not in symbols:
                raise SourceFormatError(entry.original, 0, "symbol", f"{entry.symbol} is not a configured symbol")
            frame, report.format = read_source(source, latest_time)
            collected = frame.collect()
            if collected.filter(pl.col("reason").is_null()).height == 0:
                raise SourceFormatError(entry.original, 0, "rows", "no valid rows")
        except (SourceFormatError, pl.exceptions.PolarsError, OSError) as exc:
            # A file that cannot be read adds nothing: it leaves the landing folder, and the error names it.
            # Named by the user's file, not its landing copy.
            text = str(exc) if isinstance(exc, SourceFormatError) else f"{entry.original}: {exc}"
            report.error = text.replace(str(source.path), entry.original)
            result.sources.append(report)
            manifest.entries.remove(entry)
            manifest.path_of(entry).unlink(missing_ok=True)
            pending.remove(entry)
            if progress:
                progress(report)
            continue
        frames[entry.order] = (collected, report.format)
    manifest.save()
    if not pending:
        return result

    older = [e for e in manifest.latest_first() if e.merged and e not in pending]
    for symbol in sorted({e.symbol for e in pending}):
        mine = [e for e in pending if e.symbol == symbol]
        times = pl.concat([frames[e.order][0].select("open_time") for e in mine]).filter(
            pl.col("open_time").is_not_null()
            & (pl.col("open_time") >= EARLIEST_TIME)
            & (pl.col("open_time") <= latest_time)
        )
        months = sorted(
            {
                Month(y, m)
                for y, m in times.select(
                    pl.col("open_time").dt.year().alias("y"), pl.col("open_time").dt.month().alias("m")
                )
                .unique()
                .iter_rows()
            }
        )
        readers = [
            _Reader(
                manifest.path_of(e),
                symbol,
                rank,
                e.label(),
                lambda e=e: (frames[e.order][0].lazy(), frames[e.order][1]),
            )
            for rank, e in enumerate(mine)
        ]
        # Older files are read only to name the source of a stored row that a new file replaces.
        candidates = [
            _Reader(
                manifest.path_of(e),
                symbol,
                len(mine) + i,
                e.label(),
                lambda e=e: read_source(SourceFile(manifest.path_of(e), e.symbol, 0), latest_time),
            )
            for i, e in enumerate(o for o in older if o.symbol == symbol)
        ]
        part = _merge_months(readers, lake, [symbol], months or [], latest_time, progress, candidates, older)
        result = _combine(result, part)
    for entry in pending:
        collected = frames[entry.order][0]
        valid = collected.filter(pl.col("reason").is_null())
        entry.rows = collected.height
        entry.first = valid["open_time"].min().isoformat()
        entry.last = valid["open_time"].max().isoformat()
        entry.merged = True
    manifest.save()
    return result


def _combine(a: IngestResult, b: IngestResult) -> IngestResult:
    return IngestResult(
        minute=a.minute.merge(b.minute),
        quarantine=a.quarantine.merge(b.quarantine),
        frame=pl.concat([a.frame, b.frame], rechunk=False),  # no copy of the rows written
        sources=a.sources + b.sources,
        rows_read=a.rows_read + b.rows_read,
        duplicates_removed=a.duplicates_removed + b.duplicates_removed,
        quarantined=a.quarantined + b.quarantined,
        conflicts=pl.concat([a.conflicts, b.conflicts]),
    )


def _merge_months(
    readers: Sequence[_Reader],
    lake: Path,
    symbols: Sequence[str],
    months: Sequence[Month],
    latest_time: datetime,
    progress: Callable[[SourceReport], None] | None,
    candidates: Sequence[_Reader] = (),
    older: Sequence[LandingEntry] = (),
    keep_rows: bool = True,
) -> IngestResult:
    """Merge symbol by symbol: symbols share no row, and one symbol's history at a time bounds the memory."""
    if len(symbols) < 2 or any(r.symbol not in symbols for r in (*readers, *candidates)):
        return _merge_symbol_months(readers, lake, symbols, months, latest_time, progress, candidates, older)
    result = IngestResult(WriteSummary(), WriteSummary())
    for symbol in sorted(symbols):  # the rows written come out in (symbol, open_time) order, as one merge gives
        mine = [r for r in readers if r.symbol == symbol]
        theirs = [c for c in candidates if c.symbol == symbol]
        part = _merge_symbol_months(mine, lake, [symbol], months, latest_time, progress, theirs, older)
        if not keep_rows:
            part.frame = part.frame.clear()
        result = _combine(result, part)
    return result


def _merge_symbol_months(
    readers: Sequence[_Reader],
    lake: Path,
    symbols: Sequence[str],
    months: Sequence[Month],
    latest_time: datetime,
    progress: Callable[[SourceReport], None] | None,
    candidates: Sequence[_Reader] = (),
    older: Sequence[LandingEntry] = (),
) -> IngestResult:
    """Merge ``readers`` (ranked), the stored months and the stored exchange candles; write every dataset.

    ``candidates`` are earlier sources that may have given stored rows: read only when a stored row loses to
    a different version, so the conflict can name where it came from.
    """
    if not months:
        return IngestResult(WriteSummary(), WriteSummary())
    # Rows whose time is missing or impossible belong to no month; they are kept apart, per symbol.
    in_window, no_month = month_filters(months, latest_time)

    base_rank = max([r.rank for r in (*readers, *candidates)], default=-1) + 1
    exchange_rank = base_rank + 1
    labels = {r.rank: r.label for r in (*readers, *candidates)} | {
        base_rank: EARLIER_LAKE,
        exchange_rank: EXCHANGE_MINUTES,
    }
    exchange = [
        _Reader(path, symbol, exchange_rank, EXCHANGE_MINUTES, read)
        for path, symbol, read in exchange_sources(lake, symbols, months, exchange_rank, latest_time)
    ]

    good_parts: list[pl.DataFrame] = []
    bad_parts: list[pl.DataFrame] = []
    unparsed: list[pl.DataFrame] = []
    reports: list[SourceReport] = []
    read_files: list[str] = []

    def read_all(batch: Sequence[_Reader], report_them: bool) -> None:
        for reader in batch:
            report = SourceReport(str(reader.path), reader.symbol)
            try:
                rows, report.format = read_ranked(reader.read, reader.rank, in_window | no_month)
            except READ_ERRORS as exc:
                report.error = read_error(reader.path, exc)
                if report_them:
                    reports.append(report)
                    if progress:
                        progress(report)
                continue
            read_files.append(str(reader.path))
            good, bad, no_time = split_rows(rows, no_month)
            good_parts.append(good)
            bad_parts.append(bad)
            unparsed.append(no_time)
            report.rows, report.quarantined = rows.height, bad.height + no_time.height
            if report_them:
                reports.append(report)
                if progress:
                    progress(report)

    read_all([*readers, *exchange], report_them=True)
    stored = scan_months(lake, MINUTE_DATASET, symbols, months, MINUTE_SCHEMA).collect()
    winners, conflicts, duplicates, pool_rows = merge_pool(good_parts, stored, base_rank)
    if candidates and (conflicts["source_rank"] == base_rank).any():
        lost = conflicts.filter(pl.col("source_rank") == base_rank).select(MINUTE_SCHEMA.names())
        first, final = lost["open_time"].min(), lost["open_time"].max()
        overlapping = [
            c
            for c, e in zip(candidates, older_for(candidates, older), strict=True)
            if e.span() is None or (e.span()[0] <= final and e.span()[1] >= first)
        ]
        count = len(good_parts)
        read_all(overlapping, report_them=False)
        # Their rows only name where a replaced stored row came from: only rows equal to one are kept, so they
        # never change what is merged.
        named = [p.join(lost, on=MINUTE_SCHEMA.names(), how="semi", nulls_equal=True) for p in good_parts[count:]]
        good_parts = good_parts[:count] + named
        winners, conflicts, duplicates, pool_rows = merge_pool(good_parts, stored, base_rank)
    good_parts.clear()  # the sources' rows are merged: free them before the writes
    named_conflicts = name_conflicts(conflicts, labels)

    quarantine_summary = write_losers(lake, symbols, months, named_conflicts, bad_parts, unparsed, read_files)
    minute_summary = write_months(winners, lake, MINUTE_DATASET, "open_time", symbols, months)
    return IngestResult(
        minute=minute_summary,
        quarantine=quarantine_summary,
        sources=reports,
        rows_read=sum(r.rows for r in reports),
        duplicates_removed=duplicates,
        frame=winners,
        quarantined=sum(r.quarantined for r in reports),
        conflicts=named_conflicts,
    )


def write_losers(
    lake: Path,
    symbols: Sequence[str],
    months: Sequence[Month],
    named_conflicts: pl.DataFrame,
    bad_parts: Sequence[pl.DataFrame],
    unparsed: Sequence[pl.DataFrame],
    read_files: Sequence[str],
) -> WriteSummary:
    """Write minute_conflicts and quarantine for the window; returns the quarantine's summary.

    Called before minute_raw is written: a crash before then loses no losing version, and the rerun finds the
    same ones again. Quarantined rows of the files read now replace those the same files gave before.
    """
    quarantine = pl.concat(bad_parts) if bad_parts else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    earlier = scan_months(lake, CONFLICTS_DATASET, symbols, months, CONFLICT_SCHEMA).collect()
    all_conflicts = union_conflicts(earlier, named_conflicts)
    write_months(all_conflicts, lake, CONFLICTS_DATASET, "open_time", symbols, months)
    kept_quarantine = scan_months(lake, QUARANTINE_DATASET, symbols, months, QUARANTINE_SCHEMA).collect()
    kept_quarantine = kept_quarantine.filter(~pl.col("source_file").is_in(read_files))
    quarantine = pl.concat([kept_quarantine, quarantine.select(QUARANTINE_SCHEMA.names())])
    quarantine = quarantine.sort("symbol", "open_time", "source_file", "line")
    quarantine_summary = write_months(quarantine, lake, QUARANTINE_DATASET, "open_time", symbols, months)
    return quarantine_summary.merge(_write_unparsed(list(unparsed), lake, symbols, read_files))


def older_for(candidates: Sequence[_Reader], older: Sequence[LandingEntry]) -> list[LandingEntry]:
    by_label = {e.label(): e for e in older}
    return [by_label[c.label] for c in candidates]


def merge_pool(
    good_parts: list[pl.DataFrame], stored: pl.DataFrame, base_rank: int
) -> tuple[pl.DataFrame, pl.DataFrame, int, int]:
    """The sources' good rows merged with the stored rows; (winners, conflicts, duplicates, source rows)."""
    pool = (
        pl.concat(good_parts)
        if good_parts
        else pl.DataFrame(schema={**MINUTE_SCHEMA, "source_rank": pl.Int32, "line": pl.Int64})
    )
    if stored.height and pool.height:
        # A stored row some source still gives is that source's row, not a version of its own.
        stored = stored.join(pool.select(MINUTE_SCHEMA.names()), on=MINUTE_SCHEMA.names(), how="anti", nulls_equal=True)
    if stored.height:
        stored = stored.with_columns(
            pl.lit(base_rank, pl.Int32).alias("source_rank"), pl.int_range(pl.len(), dtype=pl.Int64).alias("line")
        )
        frame = pl.concat([pool, stored]) if pool.height else stored
    else:
        frame = pool
    winners, conflicts, duplicates = merge_ranked(frame)
    return winners, conflicts, duplicates, pool.height


def _write_unparsed(
    parts: list[pl.DataFrame], lake: Path, symbols: Sequence[str], read_files: Sequence[str]
) -> WriteSummary:
    """Rows without a usable time belong to no month; they are kept per symbol beside the months."""
    summary = WriteSummary()
    frame = pl.concat(parts) if parts else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    for symbol in symbols:
        path = lake / QUARANTINE_DATASET / f"symbol={symbol}" / UNPARSED_FILE
        kept = read_parquet(path).filter(~pl.col("source_file").is_in(read_files)) if path.is_file() else None
        rows = frame.filter(pl.col("symbol") == symbol)
        if kept is not None:
            rows = pl.concat([kept, rows.select(QUARANTINE_SCHEMA.names())])
        rows = rows.sort("source_file", "line")
        if rows.height:
            summary.bytes_written += write_parquet_atomic(rows, path)
            summary.rows += rows.height
            summary.files.append(path)
        elif path.exists():
            path.unlink()
            summary.removed.append(path)
    return summary
