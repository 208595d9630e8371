"""SQL over the lake with Polars SQL: every dataset is a table, scanned lazily from its Parquet files.

Month-partitioned datasets (``<dataset>/symbol=S/year=Y/month=M``) and per-symbol ones (``<dataset>/symbol=S``)
are found by their layout, so a new dataset is queryable without code. The speed layer's micro-batches are
``speed_candles_1m`` and ``speed_daily`` (every committed version of each row, with ``batch_id``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import polars as pl

from crypto_assets.lake.layout import DATASET_PATTERN, PART_FILE
from crypto_assets.lake.microbatch_log import (
    CANDLES_1M,
    DAILY,
    SPEED,
    latest_batch_id,
    speed_root,
)
from crypto_assets.serving.speed_store import committed_files, scan_files, speed_lock


class SqlError(ValueError):
    """The query could not be planned or run; the message says why."""


def dataset_files(root: Path) -> list[Path]:
    """The part files of one dataset directory in either layout."""
    return sorted(root.glob(f"symbol=*/year=*/month=*/{PART_FILE}")) + sorted(root.glob(f"symbol=*/{PART_FILE}"))


def lake_tables(lake: Path) -> dict[str, pl.LazyFrame]:
    tables: dict[str, pl.LazyFrame] = {}
    if lake.is_dir():
        for root in sorted(p for p in lake.iterdir() if p.is_dir() and p.name != SPEED and DATASET_PATTERN.match(p.name)):
            files = dataset_files(root)
            if files:
                tables[root.name] = pl.scan_parquet(files, hive_partitioning=False)
    latest = latest_batch_id(lake)
    for dataset in (CANDLES_1M, DAILY):
        files = committed_files(lake, dataset, latest)
        if files:
            tables[f"speed_{dataset}"] = scan_files(files, dataset)
    return tables


def reading(lake: Path) -> AbstractContextManager:
    """Hold off compaction while micro-batch files are listed and read."""
    return speed_lock(lake, exclusive=False) if speed_root(lake).is_dir() else nullcontext()


def run_sql(lake: Path, query: str) -> pl.DataFrame:
    with reading(lake):
        tables = lake_tables(lake)
        try:
            return pl.SQLContext(frames=tables).execute(query, eager=False).collect()
        except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError) as exc:
            raise SqlError(f"{exc}\nknown tables: {', '.join(tables) or 'none (the lake is empty)'}") from exc
        except (pl.exceptions.ColumnNotFoundError, pl.exceptions.SchemaError, pl.exceptions.InvalidOperationError) as exc:
            raise SqlError(str(exc).split("\n\nResolved plan")[0]) from exc


def describe_tables(lake: Path) -> pl.DataFrame:
    with reading(lake):
        tables = lake_tables(lake)
        rows = [(name, ", ".join(f"{c} {t}" for c, t in frame.collect_schema().items())) for name, frame in tables.items()]
    return pl.DataFrame(rows, schema=["table", "columns"], orient="row")
