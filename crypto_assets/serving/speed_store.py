"""Reading the speed layer's micro-batches (see :mod:`crypto_assets.lake.microbatch_log`) and their compacted form.

Compaction folds committed micro-batches into one file per dataset, ``<lake>/speed/_compacted/<dataset>/
part-0.parquet``, and removes their directories. Readers hold a shared lock and compaction an exclusive one,
so a reader never lists a batch directory that disappears before it is read.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from crypto_assets.lake.microbatch_log import (
    CANDLES_1M,
    DAILY,
    SPEED_CANDLE_SCHEMA,
    SPEED_DAILY_SCHEMA,
    batch_id_of,
    latest_batch_id,
    speed_root,
)

COMPACTED = "_compacted"
PART = "part-0.parquet"
SCHEMAS = {CANDLES_1M: SPEED_CANDLE_SCHEMA, DAILY: SPEED_DAILY_SCHEMA}


def compacted_file(lake: Path, dataset: str) -> Path:
    return speed_root(lake) / COMPACTED / dataset / PART


@contextmanager
def speed_lock(lake: Path, exclusive: bool) -> Iterator[None]:
    path = speed_root(lake) / COMPACTED / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def batch_dirs(lake: Path, dataset: str) -> list[tuple[int, Path]]:
    """The ``batch=<N>`` directories of a speed dataset, oldest first."""
    root = speed_root(lake) / dataset
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("batch=*"):
        try:
            found.append((batch_id_of(path), path))
        except ValueError:
            continue  # not a batch directory (e.g. batch=tmp): not ours to read
    return sorted(found)


def committed_files(lake: Path, dataset: str, through: int | None) -> list[Path]:
    """The compacted file and the batch files of every logged batch (ids up to ``through``)."""
    files = [compacted_file(lake, dataset)]
    if through is not None:
        files += [path / PART for batch_id, path in batch_dirs(lake, dataset) if batch_id <= through]
    return [f for f in files if f.is_file()]


def scan_files(files: list[Path], dataset: str) -> pl.LazyFrame:
    schema = SCHEMAS[dataset]
    if not files:
        return pl.LazyFrame(schema=schema)
    return pl.concat([pl.scan_parquet(f).select([pl.col(c).cast(t) for c, t in schema.items()]) for f in files])


def read_speed(lake: Path, dataset: str, where: pl.Expr | None = None) -> pl.DataFrame:
    """Every committed row of a speed dataset (all versions of each key), optionally filtered."""
    with speed_lock(lake, exclusive=False):
        frame = scan_files(committed_files(lake, dataset, latest_batch_id(lake)), dataset)
        return (frame if where is None else frame.filter(where)).collect()
