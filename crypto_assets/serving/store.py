"""Where the unified view lives and how it reads the batch layer.

One file per symbol, ``<lake>/unified_view/symbol=<S>/part-0.parquet``, written atomically. Batch rows are
read with ``as_of``: the time their month partition was written, which tells a closed day from one the batch
layer wrote while it was still running.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.asset_names import DAILY_FILLED, MINUTE_RAW, UNIFIED_VIEW
from crypto_assets.lake.layout import PART_FILE, Month
from crypto_assets.lake.location import read_parquet, scan_parquet
from crypto_assets.schema import FILLED_SCHEMA, MINUTE_SCHEMA
from crypto_assets.serving.unified import AS_OF
from crypto_assets.validation import validate_symbol


def view_file(lake: Path, symbol: str) -> Path:
    return lake / UNIFIED_VIEW / f"symbol={validate_symbol(symbol)}" / PART_FILE


def read_view(lake: Path, symbol: str) -> pl.DataFrame:
    path = view_file(lake, symbol)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; materialize unified_view for {symbol} first")
    return read_parquet(path)


def month_files(lake: Path, dataset: str, symbol: str) -> list[tuple[Month, Path]]:
    root = lake / dataset / f"symbol={validate_symbol(symbol)}"
    found = []
    for path in root.glob(f"year=*/month=*/{PART_FILE}"):
        year, month = path.parent.parent.name.removeprefix("year="), path.parent.name.removeprefix("month=")
        if year.isdigit() and month.isdigit():
            found.append((Month(int(year), int(month)), path))
    return sorted(found)


def written_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _with_as_of(files: list[Path], schema: pl.Schema) -> pl.LazyFrame:
    if not files:
        return pl.LazyFrame(schema={**schema, "as_of": AS_OF})
    return pl.concat(
        [
            scan_parquet([f]).select(schema.names()).with_columns(pl.lit(written_at(f), AS_OF).alias("as_of"))
            for f in files
        ]
    )


def read_batch_view(lake: Path, symbol: str) -> pl.LazyFrame:
    """daily_filled of one symbol, every stored month, with ``as_of``."""
    return _with_as_of([p for _, p in month_files(lake, DAILY_FILLED, symbol)], FILLED_SCHEMA)


def read_batch_minutes(lake: Path, symbol: str, after: date | None) -> pl.LazyFrame:
    """minute_raw of one symbol for the days after ``after`` (all days when None), with ``as_of``."""
    first = None if after is None else Month.of(after + timedelta(days=1))
    files = [p for month, p in month_files(lake, MINUTE_RAW, symbol) if first is None or month >= first]
    frame = _with_as_of(files, MINUTE_SCHEMA)
    return frame if after is None else frame.filter(pl.col("open_time").dt.date() > after)
