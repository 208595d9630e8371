"""``minute_raw`` on Spark: the same merge as :func:`crypto_assets.batch.minute_ingest.ingest_window`, spread
over the executors.

1. The source files (and the window's stored exchange candles) become a DataFrame of paths, one per task.
   Each executor reads its files with the project's own readers and validation (``read_source``,
   ``split_rows``) through ``mapInArrow``: good rows go on, quarantined rows and a report per file come back
   to the driver (they are few).
2. Spark shuffles the good rows by (symbol, month). Each group is merged by the Polars merge itself
   (``merge_pool``: rank order, stored rows, conflicts kept) through ``applyInArrow``, and its month file is
   written beside its final place under a temporary name.
3. The driver writes ``minute_conflicts`` and ``quarantine`` with the shared writer, then commits each staged
   month file with one rename. A crash before the commit leaves only temporary files (removed by the next
   writer holding the lock) and never a month without its losing versions recorded.

Every rule is the Polars one; only where rows go is Spark's. The lake must be one every executor reaches: an
``s3://`` lake, or a folder at the same path everywhere (local disk with a ``local[*]`` master, or a shared
mount). On object storage a staged month is an object under a temporary name, committed by one server-side
copy (S3 has no rename); source files must still be at the same path on every executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crypto_assets.batch.backfill.store import EXCHANGE_MINUTES, exchange_reader, read_partition
from crypto_assets.batch.minute_ingest import (
    EARLIER_LAKE,
    MINUTE_DATASET,
    READ_ERRORS,
    IngestResult,
    Merge,
    MergeWindow,
    SourceReport,
    merge_pool,
    month_filters,
    read_error,
    read_ranked,
    read_source,
    split_rows,
    write_losers,
)
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.batch.transforms.merge import name_conflicts
from crypto_assets.lake.atomic import commit, remove_stray_temps, stage_parquet
from crypto_assets.lake.datasets import WriteSummary, scan_months
from crypto_assets.lake.layout import Month, partition_path, stored_partitions
from crypto_assets.lake.location import lake_root
from crypto_assets.schema import MINUTE_SCHEMA, OHLCV, QUARANTINE_SCHEMA

SOURCE, EXCHANGE = "source", "exchange"
GOOD, BAD, UNPARSED, REPORT, STORED = "good", "bad", "unparsed", "report", "stored"
CONFLICT, WRITTEN = "conflict", "written"

ARROW_BATCH_ROWS = 10_000  # spark.sql.execution.arrow.maxRecordsPerBatch's default
ITEM_SCHEMA = "item long, path string, symbol string, rank int, kind string"
_VALUES = [(name, pa.float64()) for name in OHLCV]
_TIME = pa.timestamp("us", tz="UTC")

# What the readers send on: one row shape for good rows, quarantined rows and the per-file reports.
READ_ROWS = pa.schema(
    [
        ("kind", pa.string()),
        ("item", pa.int64()),
        ("symbol", pa.string()),
        ("month_key", pa.int64()),  # year * 12 + month - 1, computed by the reader in UTC
        ("open_time", _TIME),
        *_VALUES,
        ("source_rank", pa.int32()),
        ("line", pa.int64()),
        ("source_file", pa.string()),
        ("reason", pa.string()),
        ("format", pa.string()),
        ("rows", pa.int64()),
        ("quarantined", pa.int64()),
        ("error", pa.string()),
    ]
)

# What each merged (symbol, month) sends back: its conflicts and one row naming its staged file.
MERGED_ROWS = pa.schema(
    [
        ("kind", pa.string()),
        ("symbol", pa.string()),
        ("month_key", pa.int64()),
        ("seq", pa.int64()),
        ("open_time", _TIME),
        *_VALUES,
        ("source_rank", pa.int64()),
        ("kept_rank", pa.int64()),
        ("staged", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("duplicates", pa.int64()),
    ]
)

SPARK_TYPES = {
    pa.string(): "string",
    pa.int64(): "long",
    pa.int32(): "int",
    pa.float64(): "double",
    _TIME: "timestamp",
}


def ddl(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name} {SPARK_TYPES[field.type]}" for field in schema)


def to_table(parts: Sequence[pl.DataFrame], schema: pa.Schema) -> pa.Table:
    """Polars frames with some of the schema's columns as one Arrow table of the whole schema."""
    frame = pl.concat([p for p in parts if p.width], how="diagonal_relaxed")
    missing = [pl.lit(None).alias(f.name) for f in schema if f.name not in frame.columns]
    table = frame.with_columns(missing).select(schema.names).to_arrow()
    return pa.Table.from_arrays([table.column(n).cast(schema.field(n).type) for n in schema.names], schema=schema)


def month_key(column: str = "open_time") -> pl.Expr:
    t = pl.col(column)
    return (t.dt.year().cast(pl.Int64) * 12 + t.dt.month().cast(pl.Int64) - 1).alias("month_key")


def utc_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Times as the lake stores them, whatever zone Arrow handed them over in."""
    return frame.with_columns(pl.col("open_time").dt.convert_time_zone("UTC"))


# --- on the executors -------------------------------------------------------------------------------------


def read_items(batches: Iterator[pa.RecordBatch], months: list[Month], latest_time: datetime) -> Iterator:
    """``mapInArrow``: each file of the batches read and validated exactly as the Polars engine does."""
    in_window, no_month = month_filters(months, latest_time)
    for batch in batches:
        for item in batch.to_pylist():
            path, symbol, rank = item["path"], item["symbol"], item["rank"]
            if item["kind"] == EXCHANGE:
                read = exchange_reader(lake_root(path), rank, latest_time)
            else:
                read = partial(read_source, SourceFile(Path(path), symbol, rank), latest_time)
            report = {"kind": REPORT, "item": item["item"], "symbol": symbol, "source_file": path}
            try:
                rows, report["format"] = read_ranked(read, rank, in_window | no_month)
            except READ_ERRORS as exc:
                yield from to_table([pl.DataFrame([report | {"error": read_error(path, exc)}])], READ_ROWS).to_batches()
                continue
            good, bad, no_time = split_rows(rows, no_month)
            report |= {"rows": rows.height, "quarantined": bad.height + no_time.height}
            tagged = [
                good.with_columns(pl.lit(GOOD).alias("kind"), month_key()),
                bad.with_columns(pl.lit(BAD).alias("kind")),
                no_time.with_columns(pl.lit(UNPARSED).alias("kind")),
            ]
            parts = [p.with_columns(pl.lit(item["item"], pl.Int64).alias("item")) for p in tagged]
            # Batches of Spark's own Arrow batch size: a file's rows (a million for a symbol's two years) never
            # cross into the JVM as one buffer.
            yield from to_table([*parts, pl.DataFrame([report])], READ_ROWS).to_batches(max_chunksize=ARROW_BATCH_ROWS)


def merge_month(key: tuple, table: pa.Table, lake: str, base_rank: int) -> pa.Table:
    """``applyInArrow``: one (symbol, month) merged with its stored rows by the Polars merge, its file staged."""
    symbol, k = key[0].as_py(), key[1].as_py()
    month = Month(k // 12, k % 12 + 1)
    rows = utc_times(pl.from_arrow(table)).filter(pl.col("kind") == GOOD)
    # The Polars engine concatenates the sources in rank order, each in its own line order.
    pool = rows.sort("source_rank", "line").select(*MINUTE_SCHEMA.names(), "source_rank", "line").cast(MINUTE_SCHEMA)
    root = lake_root(lake)
    stored = read_partition(root, MINUTE_DATASET, symbol, month, MINUTE_SCHEMA)
    winners, conflicts, duplicates, _ = merge_pool([pool] if pool.height else [], stored, base_rank)
    staged, size = None, 0
    if winners.height:
        staged_path = stage_parquet(winners, partition_path(root, MINUTE_DATASET, symbol, month))
        staged, size = str(staged_path), staged_path.stat().st_size
    written = {
        "kind": WRITTEN,
        "symbol": symbol,
        "month_key": k,
        "staged": staged,
        "rows": winners.height,
        "bytes": size,
        "duplicates": duplicates,
    }
    lost = conflicts.with_columns(
        pl.lit(CONFLICT).alias("kind"), pl.lit(k, pl.Int64).alias("month_key"), pl.int_range(pl.len()).alias("seq")
    )
    return to_table([lost, pl.DataFrame([written])], MERGED_ROWS)


def month_merger(lake: Path, base_rank: int) -> Callable:
    """:func:`merge_month` for one lake, as ``applyInArrow`` takes it: a plain (key, table) function without
    type hints (pyspark reads hints to pick an iterator form, and cannot read a ``partial``'s)."""

    def merge(key, table):  # noqa: ANN001, ANN202
        return merge_month(key, table, str(lake), base_rank)

    return merge


# --- on the driver ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    path: str
    symbol: str
    rank: int
    kind: str
    label: str


def _items(
    sources: Sequence[SourceFile], labels: dict[Path, str], lake: Path, symbols: Sequence[str], months: list[Month]
) -> tuple[list[_Item], int]:
    """The files to read, in the order the Polars engine reads (and reports) them, and the stored rows' rank."""
    per_symbol = len(symbols) >= 2 and all(s.symbol in symbols for s in sources)
    base_rank = max([s.rank for s in sources], default=-1) + 1
    files = [_Item(str(s.path), s.symbol, s.rank, SOURCE, labels.get(s.path, str(s.path))) for s in sources]
    groups = [[s] for s in sorted(symbols)] if per_symbol else [list(symbols)]
    items = []
    for group in groups:
        items += [f for f in files if f.symbol in group or not per_symbol]
        items += [
            _Item(str(p), symbol, base_rank + 1, EXCHANGE, "")
            for symbol, _, p in stored_partitions(lake, EXCHANGE_MINUTES, group, months)
        ]
    return items, base_rank


def _stored_months(session: SparkSession, lake: Path, symbols: Sequence[str], months: list[Month]) -> DataFrame:
    """A row per stored month of the window, so a month no file touches is rewritten from what it holds."""
    keys = [
        (STORED, symbol, month.year * 12 + month.month - 1)
        for symbol, month, _ in stored_partitions(lake, MINUTE_DATASET, symbols, months)
    ]
    return session.createDataFrame(keys, "kind string, symbol string, month_key long")


def _reports(side: pl.DataFrame, items: list[_Item]) -> list[SourceReport]:
    rows = side.filter(pl.col("kind") == REPORT).sort("item")
    return [
        SourceReport(
            items[r["item"]].path,
            items[r["item"]].symbol,
            r["format"],
            r["rows"] or 0,
            r["quarantined"] or 0,
            r["error"],
        )
        for r in rows.iter_rows(named=True)
    ]


def spark_merge(session: SparkSession) -> Merge:
    """The merge of :func:`crypto_assets.batch.minute_ingest.ingest_window` on ``session``: the same files, the
    same lock, the files read and the months merged by Spark tasks."""

    def merge(
        sources: Sequence[SourceFile],
        window: MergeWindow,
        progress: Callable[[SourceReport], None] | None,
        keep_rows: bool,
    ) -> IngestResult:
        try:
            return _merge(
                session,
                sources,
                window.labels,
                window.lake,
                window.symbols,
                window.months,
                window.latest_time,
                progress,
                keep_rows,
            )
        finally:
            # Staged files of failed or retried tasks, never committed.
            remove_stray_temps([window.lake / MINUTE_DATASET])

    return merge


def _merge(
    session: SparkSession,
    sources: Sequence[SourceFile],
    labels: dict[Path, str],
    lake: Path,
    symbols: Sequence[str],
    months: list[Month],
    latest_time: datetime,
    progress: Callable[[SourceReport], None] | None,
    keep_rows: bool = True,
) -> IngestResult:
    if not months:
        return IngestResult(WriteSummary(), WriteSummary())
    items, base_rank = _items(sources, labels, lake, symbols, months)
    rows_by_item = [(i, it.path, it.symbol, it.rank, it.kind) for i, it in enumerate(items)]
    # One file per task: the files are the unit of work, and a task reads each whole.
    paths = session.createDataFrame(rows_by_item, ITEM_SCHEMA).repartition(max(len(items), 1))
    read = paths.mapInArrow(partial(read_items, months=months, latest_time=latest_time), ddl(READ_ROWS))
    # Read once, used twice (the few rows for the driver, the good rows for the merge). On disk: kept in memory,
    # the read rows of a long range outgrow the driver's heap under local[*].
    read = read.persist(StorageLevel.DISK_ONLY)
    try:
        side = utc_times(pl.from_arrow(read.where(F.col("kind") != GOOD).toArrow()))
        good = read.where((F.col("kind") == GOOD) & F.col("symbol").isin(list(symbols)))
        pool = good.unionByName(_stored_months(session, lake, symbols, months), allowMissingColumns=True)
        merged = pool.groupBy("symbol", "month_key").applyInArrow(month_merger(lake, base_rank), ddl(MERGED_ROWS))
        outcome = utc_times(pl.from_arrow(merged.toArrow()))
    finally:
        read.unpersist()

    reports = _reports(side, items)
    if progress:
        for report in reports:
            progress(report)
    read_files = [r.path for r in reports if not r.error]
    quarantined = side.filter(pl.col("kind") == BAD).sort("item", "line").select(QUARANTINE_SCHEMA.names())
    unparsed = side.filter(pl.col("kind") == UNPARSED).sort("item", "line").select(QUARANTINE_SCHEMA.names())
    bad_parts = [quarantined.cast(QUARANTINE_SCHEMA)]
    conflicts = (
        outcome.filter(pl.col("kind") == CONFLICT)
        .sort("symbol", "month_key", "seq")
        .select(*MINUTE_SCHEMA.names(), "source_rank", "kept_rank")
    )
    ranks = {it.rank: it.label for it in items if it.kind == SOURCE}
    named = name_conflicts(conflicts, ranks | {base_rank: EARLIER_LAKE, base_rank + 1: EXCHANGE_MINUTES})
    quarantine_summary = write_losers(
        lake, symbols, months, named, bad_parts, [unparsed.cast(QUARANTINE_SCHEMA)], read_files
    )
    written = outcome.filter(pl.col("kind") == WRITTEN)
    minute_summary = _commit_months(written, lake, symbols, months)
    return IngestResult(
        minute=minute_summary,
        quarantine=quarantine_summary,
        sources=reports,
        rows_read=sum(r.rows for r in reports),
        duplicates_removed=int(written["duplicates"].sum() or 0),
        # The rows written, in (symbol, open_time) order as the Polars engine returns them.
        frame=scan_months(lake, MINUTE_DATASET, sorted(symbols), months, MINUTE_SCHEMA).collect()
        if keep_rows
        else pl.DataFrame(schema=MINUTE_SCHEMA),
        quarantined=sum(r.quarantined for r in reports),
        conflicts=named,
    )


def _commit_months(written: pl.DataFrame, lake: Path, symbols: Sequence[str], months: list[Month]) -> WriteSummary:
    """Put each staged month in place; a month of the window left without rows is removed, as ``write_months``
    does."""
    summary = WriteSummary()
    staged = {(r["symbol"], r["month_key"]): r for r in written.iter_rows(named=True) if r["staged"]}
    for symbol in symbols:
        for month in months:
            path = partition_path(lake, MINUTE_DATASET, symbol, month)
            row = staged.get((symbol, month.year * 12 + month.month - 1))
            if row is not None:
                commit(lake_root(row["staged"]), path)
                summary.rows += row["rows"]
                summary.bytes_written += row["bytes"]
                summary.files.append(path)
            elif path.exists():
                path.unlink()
                summary.removed.append(path)
    return summary
