"""The lake's Hive layout: ``<lake>/<dataset>/symbol=<S>/year=<YYYY>/month=<MM>/part-0.parquet``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

from crypto_assets.lake.location import is_remote
from crypto_assets.validation import validate_symbol

PART_FILE = "part-0.parquet"
DATASET_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, value: date | datetime) -> Month:
        return cls(value.year, value.month)

    @property
    def start(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), 12 if self.month == 1 else self.month - 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def months_between(start: date | datetime, end: date | datetime) -> list[Month]:
    """Months overlapping the half-open interval [start, end)."""
    months: list[Month] = []
    current = Month.of(start)
    stop = end.date() if isinstance(end, datetime) else end
    if isinstance(end, datetime) and end > datetime.combine(stop, time(), end.tzinfo):
        stop += timedelta(days=1)  # an end later in a day still overlaps that day's month
    while current.start < stop:
        months.append(current)
        current = current.next()
    return months


def partition_path(lake: Path, dataset: str, symbol: str, month: Month) -> Path:
    if not DATASET_PATTERN.match(dataset):
        raise ValueError(f"invalid dataset name {dataset!r}")
    validate_symbol(symbol)
    return lake / dataset / f"symbol={symbol}" / f"year={month.year:04d}" / f"month={month.month:02d}" / PART_FILE


def existing_partitions(lake: Path, dataset: str, symbols: Iterable[str], months: Iterable[Month]) -> Iterator[Path]:
    for _, _, path in stored_partitions(lake, dataset, symbols, months):
        yield path


def stored_partitions(
    lake: Path, dataset: str, symbols: Iterable[str], months: Iterable[Month]
) -> Iterator[tuple[str, Month, Path]]:
    """(symbol, month, file) of each partition of the window that exists, symbol by symbol in month order."""
    months = list(months)
    for symbol in symbols:
        stored = _stored_test(lake, dataset, symbol)
        for month in months:
            path = partition_path(lake, dataset, symbol, month)
            if stored(path):
                yield symbol, month, path


def _stored_test(lake: Path, dataset: str, symbol: str) -> Callable[[Path], bool]:
    if not is_remote(lake):
        return Path.is_file
    # Object storage: one listing of the symbol's folder, not a request per month.
    folder = lake / dataset / f"symbol={symbol}"
    keys = set(folder.fs.find(folder.path))
    return lambda path: path.path in keys
