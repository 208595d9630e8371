"""Recognise a 1-minute history file from its header and a sample of rows, and read it into one canonical raw frame.

Three layouts are known, told apart by their header, never by configuration:

* Kaggle "Bitcoin Historical Data": header ``Timestamp,Open,High,Low,Close,Volume`` (extra columns such as
  ``Weighted_Price`` are tolerated), Unix seconds;
* Binance spot kline dumps: 12 columns, usually no header, ``open_time`` in ms (µs from 2025), ``.csv``/``.zip``;
* the exchange 6-column CSV: ``timestamp,open,high,low,close,volume`` with ``2021-03-26 03:00:00`` times.

The container is told by its first bytes, not its name: a zip archive with one ``.csv`` member, gzip data
(also under a ``.csv`` name) or plain text. Decompression is bounded (:data:`MAX_UNPACKED_BYTES`,
:data:`MAX_RATIO`). Text is UTF-8 (a BOM is skipped); UTF-16/UTF-32 with a BOM, or UTF-16 without one, is
decoded; other stray bytes only spoil the field they sit in. Fields may be separated by ``,``, ``;`` or tabs.

Every reader returns the same columns: ``line`` (1-based line in the file), ``time_raw`` (epoch number as
Float64 or text), ``time_text`` (only when an epoch time did not read as a number: its written text),
``open..volume`` (Float64, null where a value is missing or not a number), ``extra_fields`` (true when the
row has more fields than the layout) and, only when the header has a ``symbol`` column, ``symbol_raw`` (its
text: a file is one symbol's history, so rows of another symbol are quarantined, never stored under it).

Anything wrong with the file as a whole is a :class:`SourceFormatError` naming the file, line and field; no
other exception leaves this module for a bad file.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO

import polars as pl

from crypto_assets.batch.sources.discovery import not_a_regular_file
from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.schema import OHLCV, PRICES

KLINE_DUMP_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
EXTRA = "__extra"

# The header and the rows that layout detection looks at come from this much of the file's start.
HEAD_BYTES = 256 * 1024
SAMPLE_ROWS = 200
# A compressed file is never unpacked beyond this size, nor beyond MAX_RATIO times its compressed size (real
# CSV history packs 3-10x; a "zip bomb" 1000x). Small members are exempt from the ratio.
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 1024**2

ZIP_MAGIC = b"PK"
GZIP_MAGIC = b"\x1f\x8b"
ARCHIVE_NAMES = (".zip", ".gz", ".gzip", ".tar", ".tgz", ".bz2", ".xz", ".7z", ".rar")
SEPARATORS = (",", ";", "\t")


class SourceFormat(str, Enum):
    KAGGLE = "kaggle"
    KLINE_DUMP = "binance_kline_dump"
    EXCHANGE_CSV = "exchange_csv"


@dataclass(frozen=True)
class Layout:
    """Where the canonical fields sit in a file of one format, and how its text is written."""

    format: SourceFormat
    has_header: bool
    column_names: tuple[str, ...]  # every column of the file, in order (as written; may repeat)
    time_column: str
    field_columns: tuple[str, ...]  # the file's columns for open, high, low, close, volume
    epoch_time: bool  # numeric epoch (any unit) rather than date-time text
    time_index: int = 0
    field_indexes: tuple[int, ...] = (1, 2, 3, 4, 5)
    separator: str = ","
    encoding: str | None = None  # None: UTF-8 (or ASCII); else the codec the whole text is decoded with
    cr_only: bool = False  # old Mac line ends: a bare CR ends each line
    header_line: int = 1  # 1-based line of the header (blank lines may come first); 0 without a header
    symbol_index: int | None = None  # a 'symbol' column: each row's symbol, checked against the file's


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@contextmanager
def _as_source_errors(path: Path) -> Iterator[None]:
    """A damaged file, archive or stream becomes a SourceFormatError naming the file, never a traceback."""
    try:
        yield
    except SourceFormatError:
        raise
    except zipfile.BadZipFile as exc:
        raise SourceFormatError(path, 0, "archive", f"corrupt zip archive ({exc})") from exc
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise SourceFormatError(path, 0, "archive", f"corrupt or truncated compressed data ({exc})") from exc
    except NotImplementedError as exc:  # e.g. a zip compression method Python cannot unpack
        raise SourceFormatError(path, 0, "archive", f"cannot unpack: {exc}") from exc
    except RuntimeError as exc:  # zipfile: an encrypted member
        raise SourceFormatError(path, 0, "archive", f"cannot unpack: {exc}") from exc
    except UnicodeError as exc:
        raise SourceFormatError(path, 0, "encoding", f"cannot decode the text: {exc}") from exc
    except pl.exceptions.PolarsError as exc:
        raise SourceFormatError(path, 0, "file", f"cannot read as CSV: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise SourceFormatError(path, 0, "file", f"cannot read: {exc.strerror or exc}") from exc


def _container(path: Path) -> str:
    """'zip', 'gzip' or 'plain', from the file's first bytes; a '.zip' that is not one is an error."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic.startswith(ZIP_MAGIC):
        return "zip"
    if magic.startswith(GZIP_MAGIC):
        return "gzip"
    if path.suffix.lower() == ".zip":
        what = "file is empty (0 bytes)" if not magic else f"not a zip archive (it starts with {magic!r})"
        raise SourceFormatError(path, 0, "archive", what)
    return "plain"


def _unpack_limit(packed: int) -> int:
    return min(MAX_UNPACKED_BYTES, max(MAX_RATIO * packed, RATIO_FLOOR_BYTES))


def _too_big(path: Path, what: str, unpacked: int | None, packed: int) -> SourceFormatError:
    size = f"expands to {_size(unpacked)}" if unpacked is not None else f"expands beyond {_size(_unpack_limit(packed))}"
    return SourceFormatError(
        path,
        0,
        "archive",
        f"{what} {size} from {_size(packed)}; the limits are {_size(MAX_UNPACKED_BYTES)} and {MAX_RATIO}x its "
        "packed size, so it was not unpacked (unpack it yourself and ingest the .csv if it is genuine)",
    )


def _zip_member(path: Path, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The archive's one CSV member, checked against the unpack limits before a byte is unpacked."""
    files = [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and not Path(info.filename).name.startswith("._")
    ]
    if not files:
        raise SourceFormatError(path, 0, "archive", "the archive is empty")
    csvs = [info for info in files if info.filename.lower().endswith(".csv")]
    names = ", ".join(repr(info.filename) for info in files[:5]) + (", ..." if len(files) > 5 else "")
    if len(csvs) > 1:
        raise SourceFormatError(
            path, 0, "archive", f"expected one .csv inside, found {len(csvs)} ({names}); unpack it and ingest each file"
        )
    if not csvs:
        nested = [info.filename for info in files if info.filename.lower().endswith(ARCHIVE_NAMES)]
        if nested:
            raise SourceFormatError(path, 0, "archive", f"nested archive {nested[0]!r} inside; unpack it first")
        raise SourceFormatError(path, 0, "archive", f"expected one .csv inside, found none ({names})")
    member = csvs[0]
    if member.flag_bits & 0x1:
        raise SourceFormatError(path, 0, "archive", f"member {member.filename!r} is encrypted")
    if member.file_size > _unpack_limit(member.compress_size):
        raise _too_big(path, f"member {member.filename!r}", member.file_size, member.compress_size)
    return member


def _read_bounded(handle: IO[bytes], path: Path, what: str, packed: int, size: int | None = None) -> bytes:
    """All of ``handle`` (or its first ``size`` bytes), never more than the unpack limit allows."""
    limit = _unpack_limit(packed)
    data = handle.read(min(size, limit + 1) if size is not None else limit + 1)
    if len(data) > limit:
        raise _too_big(path, what, None, packed)
    return data


def _check_gzip_size(path: Path) -> None:
    """Check the size gzip records at its end (mod 4 GiB; the bounded read of the whole text catches a lie)."""
    packed = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(packed - 4, 0))
        unpacked = int.from_bytes(handle.read(4), "little")
    if unpacked > _unpack_limit(packed):
        # A truncated file ends in arbitrary bytes: unpack within the limit to tell which error it is.
        with gzip.open(path, "rb") as handle:
            _read_bounded(handle, path, "gzip data", packed)


def _check_not_nested(path: Path, head: bytes, what: str) -> None:
    if head.startswith(ZIP_MAGIC) or head.startswith(GZIP_MAGIC):
        raise SourceFormatError(path, 0, "archive", f"{what} is itself compressed (nested archive); unpack it first")


def read_head(path: Path) -> tuple[bytes, str | None]:
    """First bytes of the file's CSV text (unpacked for a zip or gzip) and the zip member's name."""
    with _as_source_errors(path):
        problem = not_a_regular_file(path)  # before any open: a FIFO would block it
        if problem:
            raise SourceFormatError(path, 0, "path", problem)
        container = _container(path)
        if container == "zip":
            with zipfile.ZipFile(path) as archive:
                member = _zip_member(path, archive)
                with archive.open(member) as handle:
                    head = handle.read(HEAD_BYTES)
                _check_not_nested(path, head, f"member {member.filename!r}")
                return head, member.filename
        if container == "gzip":
            _check_gzip_size(path)
            with gzip.open(path, "rb") as handle:
                head = _read_bounded(handle, path, "gzip data", path.stat().st_size, HEAD_BYTES)
            _check_not_nested(path, head, "the gzip data")
            return head, None
        with path.open("rb") as handle:
            return handle.read(HEAD_BYTES), None


def _text_encoding(head: bytes) -> str | None:
    """The codec of a UTF-16/UTF-32 text (by BOM, or by NUL bytes in UTF-16 without one); None for UTF-8."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 8 and sample.count(0) * 3 > len(sample):
        odd, even = sample[1::2].count(0), sample[0::2].count(0)
        return "utf-16-le" if odd > even else "utf-16-be"
    return None


def _decode(data: bytes, encoding: str | None, cr_only: bool, partial: bool = False) -> bytes:
    """UTF-8 text with LF line ends. ``partial``: ``data`` may end inside a character."""
    if encoding is not None:
        if partial and encoding.startswith("utf-16"):
            data = data[: len(data) - len(data) % 2]
        data = data.decode(encoding, errors="replace").encode("utf-8")
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if cr_only else data


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and abs(value) != float("inf")


def _split(line: str, separator: str) -> list[str]:
    return [f.strip().strip('"').strip() for f in line.split(separator)]


def _separator(header: str) -> str:
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _text_lines(path: Path, head: bytes) -> tuple[list[str], str | None, bool]:
    """Up to SAMPLE_ROWS + 1 complete lines of the head as text (blank ones kept, to count lines right)."""
    encoding = _text_encoding(head)
    cr_only = b"\n" not in head[:HEAD_BYTES] and b"\r" in head
    text = _decode(head, encoding, cr_only, partial=True).decode("utf-8", errors="replace")
    lines = text.split("\n")
    complete = lines[:-1] if len(head) >= HEAD_BYTES else lines
    if not complete and lines and lines[0].strip():
        raise SourceFormatError(
            path, 1, "header", f"line 1 is longer than {_size(HEAD_BYTES)} with no line break; is this a CSV file?"
        )
    if complete:
        complete[0] = complete[0].lstrip("\ufeff")
    return [line.rstrip("\r") for line in complete[: SAMPLE_ROWS + 1]], encoding, cr_only


def _epoch_by_vote(values: list[str]) -> bool:
    """Numeric times mean an epoch layout: the sample's majority decides, so one odd row cannot flip it."""
    numeric = sum(_is_number(v) for v in values)
    text = sum(1 for v in values if v and not _is_number(v) and v.lower() not in ("nan", "inf", "-inf", "null"))
    return numeric >= text


def _duplicate(path: Path, line: int, fields: list[str], lowered: list[str], name: str) -> None:
    positions = [i + 1 for i, c in enumerate(lowered) if c == name]
    if len(positions) > 1:
        raise SourceFormatError(
            path,
            line,
            "header",
            f"column {fields[positions[0] - 1]!r} appears {len(positions)} times (columns "
            f"{', '.join(map(str, positions))}); it is ambiguous which one to use",
        )


def detect_layout(path: Path, head: bytes) -> Layout:
    """Tell the layout from the header, and the time unit (epoch or text) from a sample of rows."""
    lines, encoding, cr_only = _text_lines(path, head)
    if not lines or not any(line.strip() for line in lines):
        raise SourceFormatError(path, 1, "header", "file is empty")
    first = next(i for i, text in enumerate(lines) if text.strip())
    line = lines[first].strip()
    separator = _separator(line)
    fields = _split(line, separator)
    lowered = [f.lower() for f in fields]
    common = {"separator": separator, "encoding": encoding, "cr_only": cr_only, "header_line": first + 1}
    rows = [_split(r, separator) for r in lines[first + 1 :] if r.strip()]

    if "timestamp" in lowered and all(c in lowered for c in PRICES):
        for name in ("timestamp", "open", "high", "low", "close", "volume", "symbol"):
            _duplicate(path, first + 1, fields, lowered, name)
        volume = next((i for i, c in enumerate(lowered) if c == "volume"), None)
        if volume is None:
            volume = next((i for i, c in enumerate(lowered) if c.startswith("volume_(")), None)
        if volume is None:
            raise SourceFormatError(path, first + 1, "header", f"no volume column in header {line[:200]!r}")
        indexes = tuple(lowered.index(c) for c in PRICES) + (volume,)
        time_index = lowered.index("timestamp")
        _check_decimal_commas(path, separator, rows, indexes)
        # Epoch numbers mean the Kaggle export; date-time text means the exchange's own CSV.
        epoch = _epoch_by_vote([r[time_index] if time_index < len(r) else "" for r in rows])
        return Layout(
            SourceFormat.KAGGLE if epoch else SourceFormat.EXCHANGE_CSV,
            True,
            tuple(fields),
            fields[time_index],
            tuple(fields[i] for i in indexes),
            epoch_time=epoch,
            time_index=time_index,
            field_indexes=indexes,
            symbol_index=lowered.index("symbol") if "symbol" in lowered else None,
            **common,
        )

    kline = (KLINE_DUMP_COLUMNS, "open_time", OHLCV)
    if lowered[0] == "open_time" and len(fields) == len(KLINE_DUMP_COLUMNS):
        _check_decimal_commas(path, separator, rows, (1, 2, 3, 4, 5))
        return Layout(SourceFormat.KLINE_DUMP, True, *kline, epoch_time=True, **common)

    # No known header: a headerless kline dump if most sampled rows look like one, whatever line 1 holds
    # (an odd first row is then quarantined as a row, not taken for a header).
    sample = [_split(r, separator) for r in lines if r.strip()]
    dump_like = sum(1 for r in sample if len(r) == len(KLINE_DUMP_COLUMNS) and _is_number(r[0]))
    if dump_like * 2 > len(sample) or (len(fields) == len(KLINE_DUMP_COLUMNS) and _is_number(fields[0])):
        _check_decimal_commas(path, separator, sample, (1, 2, 3, 4, 5))
        return Layout(SourceFormat.KLINE_DUMP, False, *kline, epoch_time=True, **(common | {"header_line": 0}))

    if _is_number(fields[0]):
        raise SourceFormatError(
            path, first + 1, "columns", f"{len(fields)} fields and no header; a Binance kline dump has 12"
        )
    raise SourceFormatError(
        path,
        first + 1,
        "header",
        f"unrecognised header {line[:120]!r}; expected 'Timestamp,Open,High,Low,Close,Volume' (Kaggle), "
        "'timestamp,open,high,low,close,volume' (exchange CSV) or a headerless 12-column Binance kline dump",
    )


_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")


def _check_decimal_commas(path: Path, separator: str, rows: list[list[str]], indexes: tuple[int, ...]) -> None:
    if separator == ",":
        return
    for row in rows[:20]:
        for i in indexes:
            if i < len(row) and _DECIMAL_COMMA.match(row[i]):
                raise SourceFormatError(
                    path,
                    0,
                    "decimal",
                    f"values such as {row[i]!r} use a decimal comma; write numbers with a decimal point",
                )


def _csv_text(path: Path, member: str | None, layout: Layout) -> tuple[bytes | Path, pl.DataFrame | None]:
    """The whole CSV text, unpacked within the limits, as UTF-8 if it is not and without runs of blank lines
    (see :func:`_cut_blank_runs`), and the line shifts; a plain UTF-8 file without such runs stays a path."""
    container = "zip" if member is not None else _container(path)
    if container == "zip":
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member) if member is not None else _zip_member(path, archive)
            with archive.open(info) as handle:
                data = _read_bounded(handle, path, f"member {info.filename!r}", info.compress_size)
    elif container == "gzip":
        with gzip.open(path, "rb") as handle:
            data = _read_bounded(handle, path, "gzip data", path.stat().st_size)
    elif layout.encoding is None and not layout.cr_only and not _has_blank_run(path):
        return path, None  # Polars reads it from disk: it is not held whole here
    else:
        data = path.read_bytes()
    return _cut_blank_runs(_decode(data, layout.encoding, layout.cr_only), layout.header_line)


# A line end and two or more blank (or all-space) lines after it. Polars would hold a row of nulls for each
# blank line (~85 bytes: 10 million of them took a gigabyte), so such runs are cut from the text before it is
# parsed; a lone blank line stays (at most one per row, and cutting each would cost more time than it saves).
# Character classes, not a repeated group: Python's re would keep a backtracking entry per repetition.
_BLANK_RUN = re.compile(rb"\n[ \t\r]*\n[ \t\r\n]*\n")


def _has_blank_run(path: Path, block_size: int = 16 * 1024**2) -> bool:
    """Whether a plain file holds a run of blank lines anywhere, read a block at a time."""
    carry = b""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            text = carry + block
            if _BLANK_RUN.search(text):
                return True
            carry = text[len(text.rstrip(b" \t\r\n")) :]  # a run may begin in this block's trailing blanks
    return False


def _cut_blank_runs(data: bytes, header_line: int) -> tuple[bytes, pl.DataFrame | None]:
    """``data`` without the runs of blank lines after its header, and the shifts that give the file's own line numbers
    back: a line numbered ``start`` or more in the text returned is ``removed`` lines further down in the file
    (the last ``start`` at or before it counts). None when nothing was cut."""
    at = 0
    for i in range(header_line):
        at = data.find(b"\n", at + (i > 0))
        if at < 0:
            return data, None
    pieces, starts, removed = [], [], []
    kept_from = counted_to = line_ends = cut = 0
    for run in _BLANK_RUN.finditer(data, at):
        line_ends += data.count(b"\n", counted_to, run.start())  # the line the run follows is line_ends + 1
        counted_to = run.start()
        pieces.append(data[kept_from : run.start() + 1])
        kept_from = run.end()
        starts.append(line_ends + 2 - cut)
        cut += data.count(b"\n", run.start(), run.end()) - 1
        removed.append(cut)
    if not starts:
        return data, None
    pieces.append(data[kept_from:])
    return b"".join(pieces), pl.DataFrame(
        {"start": starts, "removed": removed}, schema={"start": pl.Int64, "removed": pl.Int64}
    )


def _file_lines(frame: pl.DataFrame, shifts: pl.DataFrame | None) -> pl.DataFrame:
    """``frame`` (with an Int64 ``line``) numbered as the file is again, after :func:`_cut_blank_runs`."""
    if shifts is None:
        return frame
    shifted = frame.join_asof(shifts, left_on="line", right_on="start", strategy="backward")
    return shifted.with_columns(pl.col("line") + pl.col("removed").fill_null(0)).drop("start", "removed", strict=False)


def _column(i: int) -> str:
    return f"c{i}"


def read_layout(path: Path, layout: Layout, member: str | None = None) -> pl.DataFrame:
    """Read the whole file as the canonical raw frame (see the module docstring)."""
    with _as_source_errors(path):
        return _read_layout(path, layout, member)


def _read_layout(path: Path, layout: Layout, member: str | None) -> pl.DataFrame:
    # Columns are named by position: a header may repeat a name or be any length.
    wanted = set(layout.field_indexes)
    schema: dict[str, pl.DataType] = {}
    for i in range(len(layout.column_names)):
        if i == layout.time_index:
            schema[_column(i)] = pl.Float64 if layout.epoch_time else pl.String
        else:
            schema[_column(i)] = pl.Float64 if i in wanted else pl.String
    schema[EXTRA] = pl.String

    text, shifts = _csv_text(path, member, layout)
    options = {
        "has_header": False,
        "skip_rows": layout.header_line,
        "separator": layout.separator,
        "truncate_ragged_lines": True,
        "encoding": "utf8-lossy",
        "row_index_name": "line",
        "row_index_offset": layout.header_line + 1,
    }
    source = io.BytesIO(text) if isinstance(text, bytes) else text
    frame = pl.read_csv(
        source,
        schema=schema,
        missing_columns="insert",
        ignore_errors=True,  # a bad value becomes null and the row is quarantined with its reason
        **options,
    )
    time = _column(layout.time_index)
    fields = [pl.col(_column(i)).alias(dst) for i, dst in zip(layout.field_indexes, OHLCV, strict=True)]
    frame = frame.select(
        pl.col("line").cast(pl.Int64),
        pl.col(time).alias("time_raw"),
        *fields,
        pl.col(EXTRA).is_not_null().alias("extra_fields"),
        *([] if layout.symbol_index is None else [pl.col(_column(layout.symbol_index)).alias("symbol_raw")]),
    )
    frame = _file_lines(frame, shifts)
    text = _epoch_time_text(source, layout, frame, options, shifts)
    return frame if text is None else frame.with_columns(text)


def _epoch_time_text(
    source: io.BytesIO | Path, layout: Layout, frame: pl.DataFrame, options: dict, shifts: pl.DataFrame | None
) -> pl.Series | None:
    """The written text of epoch times that did not read as a number, so quarantine can show them.

    Only a file with such rows pays for this second, one-column read; other files get no ``time_text`` column.
    """
    if not layout.epoch_time:
        return None
    unread = frame.select(pl.col("time_raw").is_null() & pl.any_horizontal(pl.col(OHLCV).is_not_null())).to_series()
    if not unread.any():
        return None
    if isinstance(source, io.BytesIO):
        source.seek(0)
    texts = pl.read_csv(source, columns=[layout.time_index], infer_schema=False, **options)
    column = texts.columns[1]
    texts = _file_lines(texts.select(pl.col("line").cast(pl.Int64), pl.col(column).alias("time_text")), shifts)
    joined = frame.select("line").join(texts, on="line", how="left")
    empty = pl.repeat(None, frame.height, dtype=pl.String, eager=True)
    return joined["time_text"].zip_with(unread, empty).alias("time_text")
