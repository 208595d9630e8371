"""Recognise a 1-minute history file from its first line and read it into one canonical raw frame.

Three layouts are known, told apart by their header, never by configuration:

* Kaggle "Bitcoin Historical Data": header ``Timestamp,Open,High,Low,Close,Volume`` (extra columns such as
  ``Weighted_Price`` are tolerated), Unix seconds;
* Binance spot kline dumps: 12 columns, usually no header, ``open_time`` in ms (µs from 2025), ``.csv``/``.zip``;
* the exchange 6-column CSV: ``timestamp,open,high,low,close,volume`` with ``2021-03-26 03:00:00`` times.

Every reader returns the same columns: ``line`` (1-based line in the file), ``time_raw`` (epoch number as
Float64 or text), ``open..volume`` (Float64, null where a value is missing or not a number) and
``extra_fields`` (true when the row has more fields than the layout).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import polars as pl

from crypto_assets.batch.sources.errors import SourceFormatError

PRICE_FIELDS = ("open", "high", "low", "close", "volume")
KLINE_DUMP_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
EXTRA = "__extra"


class SourceFormat(str, Enum):
    KAGGLE = "kaggle"
    KLINE_DUMP = "binance_kline_dump"
    EXCHANGE_CSV = "exchange_csv"


@dataclass(frozen=True)
class Layout:
    """Where the canonical fields sit in a file of one format."""

    format: SourceFormat
    has_header: bool
    column_names: tuple[str, ...]  # every column of the file, in order
    time_column: str
    field_columns: tuple[str, ...]  # the file's columns for open, high, low, close, volume
    epoch_time: bool  # numeric epoch (any unit) rather than date-time text


def read_head(path: Path) -> tuple[bytes, str | None]:
    """First bytes of the file (of its CSV member for a zip) and the member name."""
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
            if len(members) != 1:
                raise SourceFormatError(path, 1, "archive", f"expected one .csv inside, found {len(members)}")
            with archive.open(members[0]) as handle:
                return handle.read(4096), members[0]
    with path.open("rb") as handle:
        return handle.read(4096), None


def _first_line(head: bytes) -> str:
    return head.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_value(head: bytes, has_header: bool) -> str:
    lines = head.split(b"\n")
    row = lines[1 if has_header else 0] if len(lines) > (1 if has_header else 0) else b""
    return row.decode("utf-8", errors="replace").split(",", 1)[0].strip()


def detect_layout(path: Path, head: bytes) -> Layout:
    """Tell the layout from the header and the time unit (epoch or text) from the first data row."""
    line = _first_line(head)
    if not line:
        raise SourceFormatError(path, 1, "header", "file is empty")
    fields = [f.strip() for f in line.split(",")]
    lowered = [f.lower() for f in fields]

    if "timestamp" in lowered and all(c in lowered for c in ("open", "high", "low", "close")):
        volume = next((fields[i] for i, c in enumerate(lowered) if c == "volume" or c.startswith("volume_(")), None)
        if volume is None:
            raise SourceFormatError(path, 1, "header", f"no volume column in header {line!r}")
        by_name = {c.lower(): c for c in fields}
        # Epoch numbers mean the Kaggle export; date-time text means the exchange's own CSV.
        epoch = _is_number(_first_value(head, has_header=True) or "0")
        return Layout(
            SourceFormat.KAGGLE if epoch else SourceFormat.EXCHANGE_CSV, True, tuple(fields), by_name["timestamp"],
            (by_name["open"], by_name["high"], by_name["low"], by_name["close"], volume), epoch_time=epoch,
        )  # fmt: skip

    if lowered[0] == "open_time" and len(fields) == len(KLINE_DUMP_COLUMNS):
        return Layout(SourceFormat.KLINE_DUMP, True, KLINE_DUMP_COLUMNS, "open_time", PRICE_FIELDS, epoch_time=True)

    if len(fields) == len(KLINE_DUMP_COLUMNS) and _is_number(fields[0]):
        return Layout(SourceFormat.KLINE_DUMP, False, KLINE_DUMP_COLUMNS, "open_time", PRICE_FIELDS, epoch_time=True)

    if _is_number(fields[0]):
        raise SourceFormatError(path, 1, "columns", f"{len(fields)} fields and no header; a Binance kline dump has 12")
    raise SourceFormatError(
        path, 1, "header",
        f"unrecognised header {line[:120]!r}; expected 'Timestamp,Open,High,Low,Close,Volume' (Kaggle), "
        "'timestamp,open,high,low,close,volume' (exchange CSV) or a headerless 12-column Binance kline dump",
    )  # fmt: skip


def _csv_bytes_or_path(path: Path, member: str | None) -> bytes | Path:
    if member is None:
        return path
    with zipfile.ZipFile(path) as archive:
        return archive.read(member)


def read_layout(path: Path, layout: Layout, member: str | None = None) -> pl.DataFrame:
    """Read the whole file as the canonical raw frame (see the module docstring)."""
    wanted = set(layout.field_columns)
    schema: dict[str, pl.DataType] = {}
    for name in layout.column_names:
        if name == layout.time_column:
            schema[name] = pl.Float64 if layout.epoch_time else pl.String
        else:
            schema[name] = pl.Float64 if name in wanted else pl.String
    schema[EXTRA] = pl.String

    source = _csv_bytes_or_path(path, member)
    frame = pl.read_csv(
        io.BytesIO(source) if isinstance(source, bytes) else source,
        has_header=False,
        skip_rows=1 if layout.has_header else 0,
        schema=schema,
        missing_columns="insert",
        truncate_ragged_lines=True,
        ignore_errors=True,  # a bad value becomes null and the row is quarantined with its reason
        encoding="utf8-lossy",
        row_index_name="line",
        row_index_offset=2 if layout.has_header else 1,
    )
    return frame.select(
        pl.col("line").cast(pl.Int64),
        pl.col(layout.time_column).alias("time_raw"),
        *[pl.col(src).alias(dst) for src, dst in zip(layout.field_columns, PRICE_FIELDS, strict=True)],
        pl.col(EXTRA).is_not_null().alias("extra_fields"),
    )
