"""A corpus of broken source files: each gets a clear error or quarantine rows, and good rows survive."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.batch.minute_ingest import ingest_window, read_source
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.batch.sources.errors import SourceFormatError

HEADER = "timestamp,open,high,low,close,volume"
GOOD = [
    "2021-03-26 03:00:00,51696.7,51926.17,51696.7,51827.72,73.9024",
    "2021-03-26 03:01:00,51827.72,51900.0,51800.0,51850.0,12.5",
    "2021-03-26 03:02:00,51850.0,51860.0,51700.0,51750.5,8.25",
    "2021-03-26 03:03:00,51750.5,51800.0,51740.0,51790.0,4.0",
]
LATEST = datetime(2030, 1, 1, tzinfo=UTC)
WINDOW = (datetime(2021, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC))


def write(tmp_path: Path, name: str, content: str | bytes) -> SourceFile:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return SourceFile(path, "BTCUSDT", 0)


def rows_of(source: SourceFile) -> pl.DataFrame:
    frame, _ = read_source(source, LATEST)
    return frame.collect()


def good_and_bad(source: SourceFile) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = rows_of(source)
    return rows.filter(pl.col("reason").is_null()), rows.filter(pl.col("reason").is_not_null())


def csv(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_truncated_last_line_is_quarantined_with_its_line_number(tmp_path):
    source = write(tmp_path, "BTCUSDT_trunc.csv", csv(HEADER, *GOOD[:3]) + "2021-03-26 03:03:00,5175")
    good, bad = good_and_bad(source)
    assert good.height == 3
    assert bad["line"].to_list() == [5]
    assert "high: missing" in bad["reason"][0]


def test_wrong_header_is_a_clear_error_naming_file_line_and_field(tmp_path):
    source = write(tmp_path, "BTCUSDT_hdr.csv", csv("date,o,h,l,c,v", *GOOD))
    with pytest.raises(SourceFormatError) as raised:
        rows_of(source)
    assert raised.value.line == 1 and raised.value.field == "header"
    assert str(source.path) in str(raised.value) and "unrecognised header" in str(raised.value)


def test_row_with_extra_fields_is_quarantined_and_neighbours_kept(tmp_path):
    source = write(tmp_path, "BTCUSDT_cols.csv", csv(HEADER, GOOD[0], GOOD[1] + ",999", GOOD[2]))
    good, bad = good_and_bad(source)
    assert good.height == 2
    assert bad["line"].to_list() == [3] and "more fields" in bad["reason"][0]


def test_headerless_file_with_wrong_column_count_is_an_error(tmp_path):
    source = write(tmp_path, "BTCUSDT_5col.csv", "1616727600000,1,2,0.5,1.5\n")
    with pytest.raises(SourceFormatError) as raised:
        rows_of(source)
    assert raised.value.field == "columns" and raised.value.line == 1


def test_mixed_timestamp_units_in_a_kline_dump_are_read_per_row(tmp_path):
    ms, us = 1616727600000, 1616727660000000  # 03:00 in ms, 03:01 in µs
    tail = "51900.0,51800.0,51850.0,12.5,0,0,0,0,0,0"
    lines = [f"{ms},51827.72,51926.17,51696.7,51827.72,73.9,0,0,0,0,0,0", f"{us},51827.72,{tail}"]
    path = tmp_path / "BTCUSDT-1m-2021-03.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BTCUSDT-1m-2021-03.csv", csv(*lines))
    good, bad = good_and_bad(SourceFile(path, "BTCUSDT", 0))
    assert bad.height == 0
    assert good["open_time"].to_list() == [
        datetime(2021, 3, 26, 3, 0, tzinfo=UTC),
        datetime(2021, 3, 26, 3, 1, tzinfo=UTC),
    ]


def test_kaggle_nan_rows_and_extra_columns_are_tolerated(tmp_path):
    kaggle = csv(
        "Timestamp,Open,High,Low,Close,Volume_(BTC),Volume_(Currency),Weighted_Price",
        "1325317920.0,4.39,4.39,4.39,4.39,0.455,2.0,4.39",
        "1325317980.0,NaN,NaN,NaN,NaN,NaN,NaN,NaN",
        "1325318040.0,4.39,4.40,4.38,4.40,1.5,6.6,4.39",
    )
    good, bad = good_and_bad(write(tmp_path, "BTCUSDT_kaggle.csv", kaggle))
    assert good.height == 2 and good["volume"].to_list() == [0.455, 1.5]
    assert bad["line"].to_list() == [3] and "open: NaN" in bad["reason"][0]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("2021-03-26 03:04:00,-1,51900,51700,51750,1", "open: zero or negative price"),
        ("2021-03-26 03:04:00,0,51900,51700,51750,1", "open: zero or negative price"),
        ("2021-03-26 03:04:00,51800,51700,51900,51750,1", "high < low"),
        ("2021-03-26 03:04:00,52000,51900,51700,51750,1", "open outside [low, high]"),
        ("2021-03-26 03:04:00,51800,51900,51700,50000,1", "close outside [low, high]"),
        ("2021-03-26 03:04:00,51800,51900,51700,51750,-3", "volume: negative"),
        ("2021-03-26 3 o'clock,51800,51900,51700,51750,1", "open_time: unparseable timestamp"),
        ("2021-03-26 03:04:30,51800,51900,51700,51750,1", "open_time: not on a minute boundary"),
        ("1999-03-26 03:04:00,51800,51900,51700,51750,1", "open_time: out of range"),
    ],
)
def test_each_invalid_value_is_quarantined_with_its_reason(tmp_path, line, reason):
    good, bad = good_and_bad(write(tmp_path, "BTCUSDT_bad.csv", csv(HEADER, *GOOD, line)))
    assert good.height == len(GOOD)
    assert bad.height == 1 and bad["line"][0] == len(GOOD) + 2 and reason in bad["reason"][0]


def test_non_utf8_bytes_quarantine_only_the_damaged_row(tmp_path):
    content = csv(HEADER, *GOOD[:2]).encode() + b"2021-03-26 03:02:00,51850.0,\xff\xfe,51700.0,51750.5,8.25\n"
    good, bad = good_and_bad(write(tmp_path, "BTCUSDT_bytes.csv", content + csv(GOOD[3]).encode()))
    assert good.height == 3
    assert bad["line"].to_list() == [4] and "high: missing or not a number" in bad["reason"][0]


def test_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceFormatError, match="file is empty"):
        rows_of(write(tmp_path, "BTCUSDT_empty.csv", ""))


def test_blank_lines_are_not_records(tmp_path):
    good, bad = good_and_bad(write(tmp_path, "BTCUSDT_blank.csv", csv(HEADER, GOOD[0], "", GOOD[1])))
    assert good.height == 2 and bad.height == 0
    assert good["line"].to_list() == [2, 4]


def test_one_bad_file_never_stops_the_others_and_no_good_row_is_dropped(tmp_path):
    lake = tmp_path / "lake"
    shuffled = [GOOD[2], GOOD[0], GOOD[3], GOOD[1], GOOD[1]]  # out of order, with a duplicate
    sources = [
        write(tmp_path, "BTCUSDT_a.csv", csv(HEADER, *shuffled, "2021-03-26 03:04:00,-5,1,1,1,1")),
        write(tmp_path, "BTCUSDT_b.csv", ""),
        write(tmp_path, "BTCUSDT_c.csv", csv("nonsense,header", "1,2")),
        write(tmp_path, "BTCUSDT_d.csv", csv(HEADER, "2021-03-26 03:05:00,51790,51800,51780,51795,2.0")),
    ]
    sources = [SourceFile(s.path, s.symbol, i) for i, s in enumerate(sources)]
    result = ingest_window(sources, lake, ["BTCUSDT"], *WINDOW, latest_time=LATEST)

    assert [bool(s.error) for s in result.sources] == [False, True, True, False]
    assert "BTCUSDT_b.csv:1: header: file is empty" in result.sources[1].error
    assert result.duplicates_removed == 1 and result.quarantined == 1
    stored = pl.read_parquet(lake / "minute_raw/symbol=BTCUSDT/year=2021/month=03/part-0.parquet")
    assert stored.height == 5
    assert stored["open_time"].is_sorted() and stored["open_time"].is_unique().all()
    quarantine = pl.read_parquet(lake / "quarantine/symbol=BTCUSDT/year=2021/month=03/part-0.parquet")
    assert quarantine["line"].to_list() == [7]
    assert quarantine["reason"][0] == "open: zero or negative price; open outside [low, high]"
    assert quarantine["source_file"][0].endswith("BTCUSDT_a.csv")


def test_conflicting_duplicates_keep_the_first_listed_source(tmp_path):
    first = write(tmp_path, "BTCUSDT_1.csv", csv(HEADER, GOOD[0]))
    second = write(tmp_path, "BTCUSDT_2.csv", csv(HEADER, GOOD[0].replace("73.9024", "1.0")))
    sources = [SourceFile(second.path, "BTCUSDT", 1), SourceFile(first.path, "BTCUSDT", 0)]
    ingest_window(sources, tmp_path / "lake", ["BTCUSDT"], *WINDOW, latest_time=LATEST)
    stored = pl.read_parquet(tmp_path / "lake/minute_raw/symbol=BTCUSDT/year=2021/month=03/part-0.parquet")
    assert stored["volume"].to_list() == [73.9024]


# -- the corpus: one entry per kind of bad input, each with its outcome -----------------------------------------
#
# An outcome is either a SourceFormatError naming the file, its line and field (``Error``), or the rows read:
# how many are good and, per quarantined line, a piece of its reason (``Rows``). Every good row of a file is
# counted, so a kind that loses one fails.

import gzip  # noqa: E402
import io  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from crypto_assets.batch.sources import formats  # noqa: E402
from crypto_assets.batch.transforms.minute import quarantine_rows  # noqa: E402


@dataclass(frozen=True)
class Error:
    field: str
    line: int
    text: str


@dataclass(frozen=True)
class Rows:
    good: int
    bad: dict[int, str] = field(default_factory=dict)
    times: tuple[datetime, ...] | None = None  # the good rows' open_time, when the kind is about time


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def crc_corrupt_zip() -> bytes:
    """A stored (uncompressed) member with one byte of its data changed: only the CRC can tell."""
    data = bytearray(zipped({"BTCUSDT.csv": csv(HEADER, *GOOD).encode()}, zipfile.ZIP_STORED))
    at = data.index(b"51696.7")
    data[at] = ord("9")
    return bytes(data)


BODY = csv(HEADER, *GOOD)
GOOD_TIMES = tuple(datetime(2021, 3, 26, 3, m, tzinfo=UTC) for m in range(4))
KLINE_ROWS = [f"{1616727600000 + 60_000 * i},51800,51900,51700,51850,1.5,0,0,0,0,0,0" for i in range(4)]
KAGGLE = "Timestamp,Open,High,Low,Close,Volume"
KAGGLE_ROWS = [f"{1616727600 + 60 * i},51800,51900,51700,51850,1.5" for i in range(4)]
ROW = "51800,51900,51700,51850,1.5"


def at(time: str) -> str:
    return f"{time},{ROW}"


SYMBOLED = "timestamp,symbol,open,high,low,close,volume"


def symboled(*symbols: str, header: str = SYMBOLED, rows: list[str] = GOOD) -> str:
    """The good rows with a symbol column after the time, one symbol per row."""
    return csv(header, *[row.replace(",", f",{s},", 1) for row, s in zip(rows, symbols, strict=True)])


CORPUS: dict[str, tuple[str, bytes | str, Error | Rows]] = {
    # archives
    "zip_zero_bytes": ("BTCUSDT-1m.zip", b"", Error("archive", 0, "file is empty")),
    "zip_not_a_zip": ("BTCUSDT-1m.zip", BODY, Error("archive", 0, "not a zip archive")),
    "zip_truncated": (
        "BTCUSDT-1m.zip",
        zipped({"BTCUSDT.csv": BODY.encode() * 50})[:300],
        Error("archive", 0, "corrupt"),
    ),
    "zip_crc_corrupt": ("BTCUSDT-1m.zip", crc_corrupt_zip(), Error("archive", 0, "corrupt zip archive")),
    "zip_empty_archive": ("BTCUSDT-1m.zip", zipped({}), Error("archive", 0, "the archive is empty")),
    "zip_two_csv_members": (
        "BTCUSDT-1m.zip",
        zipped({"a.csv": BODY.encode(), "b.csv": BODY.encode()}),
        Error("archive", 0, "found 2"),
    ),
    "zip_nested_zip": (
        "BTCUSDT-1m.zip",
        zipped({"inner.zip": zipped({"BTCUSDT.csv": BODY.encode()})}),
        Error("archive", 0, "nested archive"),
    ),
    "zip_member_is_gzip": (
        "BTCUSDT-1m.zip",
        zipped({"BTCUSDT.csv": gzip.compress(BODY.encode())}),
        Error("archive", 0, "nested archive"),
    ),
    "zip_no_csv_member": ("BTCUSDT-1m.zip", zipped({"readme.txt": b"hello"}), Error("archive", 0, "found none")),
    "zip_with_macos_metadata": (
        "BTCUSDT-1m.zip",
        zipped({"BTCUSDT.csv": BODY.encode(), "__MACOSX/._BTCUSDT.csv": b"\0\5\26\7"}),
        Rows(4),
    ),
    "zip_stored_member": ("BTCUSDT-1m.zip", zipped({"BTCUSDT.csv": BODY.encode()}, zipfile.ZIP_STORED), Rows(4)),
    "zip_under_csv_name": ("BTCUSDT_1m.csv", zipped({"BTCUSDT.csv": BODY.encode()}), Rows(4, times=GOOD_TIMES)),
    "gzip_under_csv_name": ("BTCUSDT_1m.csv", gzip.compress(BODY.encode()), Rows(4, times=GOOD_TIMES)),
    "gzip_truncated": ("BTCUSDT_1m.csv", gzip.compress(BODY.encode() * 40)[:-30], Error("archive", 0, "truncated")),
    "gzip_bomb": ("BTCUSDT_1m.csv", gzip.compress(b"\n" * 64 * 1024**2), Error("archive", 0, "not unpacked")),
    # encodings and text form
    "utf16_le_bom": ("BTCUSDT_1m.csv", BODY.encode("utf-16"), Rows(4, times=GOOD_TIMES)),
    "utf16_be_no_bom": ("BTCUSDT_1m.csv", BODY.encode("utf-16-be"), Rows(4, times=GOOD_TIMES)),
    "utf32_bom": ("BTCUSDT_1m.csv", BODY.encode("utf-32"), Rows(4)),
    "utf8_bom": ("BTCUSDT_1m.csv", "\ufeff" + BODY, Rows(4)),
    "utf8_bom_headerless_dump": ("BTCUSDT_1m.csv", "\ufeff" + csv(*KLINE_ROWS), Rows(4)),
    "latin1_header": (
        "BTCUSDT_1m.csv",
        csv("Timestamp,Open,High,Low,Close,Volume_(BTC),Volume_(\u20ac)", *[r + ",1" for r in KAGGLE_ROWS]).encode(
            "cp1252"
        ),
        Rows(4),
    ),
    "crlf_line_ends": ("BTCUSDT_1m.csv", BODY.replace("\n", "\r\n"), Rows(4, times=GOOD_TIMES)),
    "cr_only_line_ends": ("BTCUSDT_1m.csv", BODY.replace("\n", "\r"), Rows(4, times=GOOD_TIMES)),
    "semicolon_separator": ("BTCUSDT_1m.csv", BODY.replace(",", ";"), Rows(4, times=GOOD_TIMES)),
    "tab_separator": ("BTCUSDT_1m.csv", BODY.replace(",", "\t"), Rows(4, times=GOOD_TIMES)),
    "decimal_commas": (
        "BTCUSDT_1m.csv",
        csv(HEADER.replace(",", ";"), "2021-03-26 03:00:00;51800,5;51900;51700;51850;1"),
        Error("decimal", 0, "decimal comma"),
    ),
    "quoted_fields_and_header": (
        "BTCUSDT_1m.csv",
        csv(
            '"timestamp","open","high","low","close","volume"',
            *[",".join(f'"{v}"' for v in g.split(",")) for g in GOOD],
        ),
        Rows(4, times=GOOD_TIMES),
    ),
    "binary_garbage": ("BTCUSDT_1m.csv", bytes(range(256)) * 40, Error("header", 1, "")),
    # headers
    "duplicate_price_column": (
        "BTCUSDT_1m.csv",
        csv(HEADER + ",close", *[g + ",1" for g in GOOD]),
        Error("header", 1, "'close' appears 2 times (columns 5, 7)"),
    ),
    "duplicate_ignored_column": (
        "BTCUSDT_1m.csv",
        csv(KAGGLE + ",note,note", *[r + ",a,b" for r in KAGGLE_ROWS]),
        Rows(4, times=GOOD_TIMES),
    ),
    "header_longer_than_4kb": (
        "BTCUSDT_1m.csv",
        csv(HEADER + "".join(f",extra_column_number_{i}" for i in range(300)), *[g + ",0" * 300 for g in GOOD]),
        Rows(4, times=GOOD_TIMES),
    ),
    "line_1_without_end": ("BTCUSDT_1m.csv", "x" * (formats.HEAD_BYTES + 10), Error("header", 1, "no line break")),
    "no_volume_column": (
        "BTCUSDT_1m.csv",
        csv("timestamp,open,high,low,close", GOOD[0]),
        Error("header", 1, "no volume"),
    ),
    "header_only": ("BTCUSDT_1m.csv", csv(HEADER), Rows(0)),
    # blank lines and odd first rows
    "blank_line_after_header": ("BTCUSDT_1m.csv", csv(HEADER, "", *GOOD), Rows(4, times=GOOD_TIMES)),
    "blank_lines_before_header": ("BTCUSDT_1m.csv", csv("", "", HEADER, *GOOD), Rows(4, times=GOOD_TIMES)),
    "space_only_lines": ("BTCUSDT_1m.csv", csv(HEADER, GOOD[0], "   ", GOOD[1], "\t", *GOOD[2:]), Rows(4)),
    "blank_line_after_kaggle_header": ("BTCUSDT_1m.csv", csv(KAGGLE, "", *KAGGLE_ROWS), Rows(4, times=GOOD_TIMES)),
    "odd_first_row_in_exchange_csv": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("1616727540"), *GOOD),
        Rows(4, {2: "open_time: unparseable"}, GOOD_TIMES),
    ),
    "odd_first_row_in_kaggle_csv": (
        "BTCUSDT_1m.csv",
        csv(KAGGLE, at("2021-03-26 02:59"), *KAGGLE_ROWS),
        Rows(4, {2: "as written: '2021-03-26 02:59'"}, GOOD_TIMES),
    ),
    "odd_first_row_in_headerless_dump": (
        "BTCUSDT_1m.csv",
        csv("1616727540000,1,2,0.5,1.5", *KLINE_ROWS),
        Rows(4, {1: "close_time" if False else "volume: missing"}, GOOD_TIMES),
    ),
    # times
    "offset_plus_two_hours": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26 05:00:00+02:00"), at("2021-03-26T05:01:00+0200")),
        Rows(2, times=GOOD_TIMES[:2]),
    ),
    "offset_z_and_utc": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26T03:00:00Z"), at("2021-03-26 03:01:00 UTC")),
        Rows(2, times=GOOD_TIMES[:2]),
    ),
    "offset_negative_across_midnight": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-25 22:00:00-05:00")),
        Rows(1, times=GOOD_TIMES[:1]),
    ),
    "offset_half_hour": ("BTCUSDT_1m.csv", csv(HEADER, at("2021-03-26 08:30:00+05:30")), Rows(1, times=GOOD_TIMES[:1])),
    "zone_abbreviation_is_ambiguous": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26 04:00:00 CET"), *GOOD[1:]),
        Rows(3, {2: "open_time: ambiguous time zone 'CET'"}),
    ),
    "offsets_mixed_with_plain_times": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26 05:00:00+02:00"), GOOD[1]),
        Rows(1, {3: "no UTC offset, unlike other rows"}, GOOD_TIMES[:1]),
    ),
    "impossible_offset": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26 03:00:00+25:00"), *GOOD[1:]),
        Rows(3, {2: "impossible UTC offset"}),
    ),
    "fraction_of_zero_seconds": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26 03:00:00.000")),
        Rows(1, times=GOOD_TIMES[:1]),
    ),
    "fraction_off_the_minute": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("2021-03-26 03:00:00.500"), *GOOD[1:]),
        Rows(3, {2: "not on a minute boundary"}),
    ),
    "time_without_seconds": ("BTCUSDT_1m.csv", csv(HEADER, at("2021-03-26 03:00")), Rows(1, times=GOOD_TIMES[:1])),
    "year_9999_epoch_seconds": (
        "BTCUSDT_1m.csv",
        csv(KAGGLE, at("253402300740"), *KAGGLE_ROWS[1:]),
        Rows(3, {2: "out of range; open_time as written: '253402300740'"}),
    ),
    "year_9999_text": (
        "BTCUSDT_1m.csv",
        csv(HEADER, at("9999-12-31 23:59:00"), *GOOD[1:]),
        Rows(3, {2: "out of range; open_time as written: '9999-12-31 23:59:00'"}),
    ),
    "epoch_not_a_number": (
        "BTCUSDT_1m.csv",
        csv(KAGGLE, at("yesterday"), *KAGGLE_ROWS[1:]),
        Rows(3, {2: "unparseable timestamp; open_time as written: 'yesterday'"}),
    ),
    "epoch_infinite": ("BTCUSDT_1m.csv", csv(KAGGLE, at("inf"), *KAGGLE_ROWS[1:]), Rows(3, {2: "as written: 'inf'"})),
    # values
    "price_inf": (
        "BTCUSDT_1m.csv",
        csv(HEADER, GOOD[0].replace("51926.17", "inf"), *GOOD[1:]),
        Rows(3, {2: "high: not finite"}),
    ),
    "price_minus_inf": (
        "BTCUSDT_1m.csv",
        csv(HEADER, GOOD[0].replace("51696.7,51926", "-inf,51926", 1), *GOOD[1:]),
        Rows(3, {2: "open: not finite"}),
    ),
    "price_1e308": (
        "BTCUSDT_1m.csv",
        csv(HEADER, "2021-03-26 03:00:00,1e308,1e308,1e308,1e308,1", *GOOD[1:]),
        Rows(3, {2: "open: absurdly large"}),
    ),
    "volume_1e308": (
        "BTCUSDT_1m.csv",
        csv(HEADER, GOOD[0].replace("73.9024", "1e308"), *GOOD[1:]),
        Rows(3, {2: "volume: absurdly large"}),
    ),
    "volume_inf": (
        "BTCUSDT_1m.csv",
        csv(HEADER, GOOD[0].replace("73.9024", "Infinity"), *GOOD[1:]),
        Rows(3, {2: "volume: not finite"}),
    ),
    "volume_nan_text": (
        "BTCUSDT_1m.csv",
        csv(HEADER, GOOD[0].replace("73.9024", "nan"), *GOOD[1:]),
        Rows(3, {2: "volume: NaN"}),
    ),
    "price_empty_field": (
        "BTCUSDT_1m.csv",
        csv(HEADER, GOOD[0].replace("51827.72", ""), *GOOD[1:]),
        Rows(3, {2: "close: missing"}),
    ),
    "negative_zero_volume_and_tiny_price": (
        "BTCUSDT_1m.csv",
        csv(HEADER, "2021-03-26 03:00:00,1e-8,1e-8,1e-8,1e-8,-0.0", *GOOD[1:]),
        Rows(4),
    ),
    "short_row": ("BTCUSDT_1m.csv", csv(HEADER, "2021-03-26 03:00:00,1,2", *GOOD[1:]), Rows(3, {2: "low: missing"})),
    # a symbol column: each row must be of the symbol the file is ingested as (here BTCUSDT)
    "symbol_column_all_the_files_symbol": ("BTCUSDT_1m.csv", symboled(*["BTCUSDT"] * 4), Rows(4, times=GOOD_TIMES)),
    "symbol_column_with_several_symbols": (
        "BTCUSDT_1m.csv",
        symboled("BTCUSDT", "ETHUSDT", "BTCUSDT", "SOLUSDT"),
        Rows(2, {3: "symbol: ETHUSDT, but the file is ingested as BTCUSDT", 5: "symbol: SOLUSDT, but"}),
    ),
    "symbol_column_invalid_symbol": (
        "BTCUSDT_1m.csv",
        symboled("BTCUSDT", "btc/usdt", "BTCUSDT", "BTCUSDT"),
        Rows(3, {3: "symbol: invalid symbol 'btc/usdt'"}),
    ),
    "symbol_column_empty_field": (
        "BTCUSDT_1m.csv",
        symboled("BTCUSDT", "BTCUSDT", " ", "BTCUSDT"),
        Rows(3, {4: "symbol: missing"}),
    ),
    "symbol_column_in_kaggle_csv_quoted": (
        "BTCUSDT_1m.csv",
        symboled(
            '"BTCUSDT"',
            '"ETHUSDT"',
            '"BTCUSDT"',
            '"BTCUSDT"',
            header="Timestamp,Symbol,Open,High,Low,Close,Volume",
            rows=KAGGLE_ROWS,
        ),
        Rows(3, {3: "symbol: ETHUSDT, but"}),
    ),
    "symbol_column_last_with_extra_columns": (
        "BTCUSDT_1m.csv",
        csv(HEADER + ",trades,symbol", *[g + ",5,BTCUSDT" for g in GOOD[:3]], GOOD[3] + ",5,ETHUSDT"),
        Rows(3, {5: "symbol: ETHUSDT, but"}, GOOD_TIMES[:3]),
    ),
    "symbol_column_twice": (
        "BTCUSDT_1m.csv",
        csv(SYMBOLED + ",symbol", *[g.replace(",", ",BTCUSDT,", 1) + ",ETHUSDT" for g in GOOD]),
        Error("header", 1, "'symbol' appears 2 times"),
    ),
}


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_corpus_kind_has_its_outcome(tmp_path, kind):
    name, content, outcome = CORPUS[kind]
    source = write(tmp_path, name, content)
    if isinstance(outcome, Error):
        with pytest.raises(SourceFormatError) as raised:
            rows_of(source)
        error = raised.value
        assert (error.field, error.line) == (outcome.field, outcome.line), str(error)
        assert str(source.path) in str(error) and outcome.text in str(error)
        return
    rows = rows_of(source)
    good = rows.filter(pl.col("reason").is_null())
    bad = quarantine_rows(rows.lazy()).collect()  # as stored in the quarantine dataset
    assert good.height == outcome.good, bad.select("line", "reason").rows()
    reasons = dict(zip(bad["line"].to_list(), bad["reason"].to_list(), strict=True))
    assert set(reasons) == set(outcome.bad), reasons
    for line, text in outcome.bad.items():
        assert text in reasons[line], reasons[line]
    if outcome.times is not None:
        assert good["open_time"].to_list() == list(outcome.times)


def test_a_directory_source_picks_up_gzip_files_too(tmp_path):
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    (tmp_path / "BTCUSDT_1m.csv.gz").write_bytes(gzip.compress(BODY.encode()))
    (tmp_path / "notes.txt").write_text("not a source")
    found, problems = discover_sources([SourceSpec(str(tmp_path))], ["BTCUSDT"])
    assert [f.path.name for f in found] == ["BTCUSDT_1m.csv.gz"] and not problems
    assert good_and_bad(found[0])[0].height == 4


def test_the_corpus_covers_at_least_40_kinds_beside_the_cases_above():
    assert len(CORPUS) >= 40


def test_the_whole_corpus_in_one_ingest_keeps_every_good_row(tmp_path):
    """Every kind at once, with a good file among them: the bad files are reported, the rest is stored."""
    sources = []
    for i, kind in enumerate(sorted(CORPUS)):
        name, content, _ = CORPUS[kind]
        (tmp_path / kind).mkdir()
        sources.append(SourceFile(write(tmp_path / kind, name, content).path, "BTCUSDT", i))
    neighbour = write(tmp_path, "BTCUSDT_good.csv", csv(HEADER, at("2021-03-26 04:00:00")))
    sources.append(SourceFile(neighbour.path, "BTCUSDT", len(sources)))
    result = ingest_window(sources, tmp_path / "lake", ["BTCUSDT"], *WINDOW, latest_time=LATEST)
    errors = {kind for kind, report in zip(sorted(CORPUS), result.sources, strict=False) if report.error}
    assert errors == {kind for kind, (_, _, outcome) in CORPUS.items() if isinstance(outcome, Error)}
    stored = pl.read_parquet(tmp_path / "lake/minute_raw/symbol=BTCUSDT/year=2021/month=03/part-0.parquet")
    # 03:00..03:03 from the corpus (duplicated across kinds) and 04:00 from the good neighbour.
    assert stored["open_time"].to_list() == [*GOOD_TIMES, datetime(2021, 3, 26, 4, 0, tzinfo=UTC)]


def test_quarantine_shows_a_year_9999_row_as_written_not_as_1978(tmp_path):
    source = write(tmp_path, "BTCUSDT_9999.csv", csv(KAGGLE, at("253402300740"), KAGGLE_ROWS[1]))
    result = ingest_window([source], tmp_path / "lake", ["BTCUSDT"], *WINDOW, latest_time=LATEST)
    assert result.quarantined == 1 and result.minute.rows == 1
    unparsed = pl.read_parquet(tmp_path / "lake/quarantine/symbol=BTCUSDT/unparsed.parquet")
    assert unparsed["open_time"].to_list() == [None]
    assert "'253402300740'" in unparsed["reason"][0]
    assert not list((tmp_path / "lake/quarantine").rglob("year=1978"))


# -- whole runs: a bad file beside a good one, on the command line and under [[sources]] -------------------------

# Peak RSS from /proc (VmHWM, this process's own memory): ru_maxrss survives exec on Linux, so a child of a
# large test process would report its parent's size.
BOMB_SCRIPT = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from crypto_assets.batch.minute_ingest import read_source
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.batch.sources.errors import SourceFormatError
try:
    read_source(SourceFile(Path(sys.argv[1]), "BTCUSDT", 0), datetime(2030, 1, 1, tzinfo=UTC))[0].collect()
    print("read")
except SourceFormatError as exc:
    print(exc)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) // 1024)
"""


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """About 1 MB of zip that unpacks to 1 GiB of newlines."""
    path = tmp_path_factory.mktemp("bomb") / "BTCUSDT-1m-2021-03.zip"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("BTCUSDT-1m-2021-03.csv", "w", force_zip64=True) as member,
    ):
        chunk = b"\n" * (1 << 24)
        for _ in range(64):
            member.write(chunk)
    return path


@pytest.mark.integration  # measures the peak memory of a child process
def test_a_zip_bomb_is_refused_before_it_is_unpacked(zip_bomb):
    import subprocess
    import sys

    from crypto_assets_tests.conftest import REPO

    assert zip_bomb.stat().st_size < 2 * 1024**2
    done = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(zip_bomb)], capture_output=True, text=True, cwd=REPO, check=True
    )
    message, rss_mb = done.stdout.strip().splitlines()
    assert "expands to 1.0 GiB" in message and "not unpacked" in message and str(zip_bomb) in message
    assert int(rss_mb) < 600, f"peak RSS {rss_mb} MB"


def test_ingest_command_stores_the_good_file_beside_corrupt_archives_and_a_zip_bomb(
    tmp_path, project_home, zip_bomb, capsys
):
    from crypto_assets.cli import main

    home = project_home()
    good = write(tmp_path, "BTCUSDT_good.csv", BODY).path
    truncated = write(tmp_path, "BTCUSDT-1m-2021-04.zip", zipped({"BTCUSDT.csv": BODY.encode() * 50})[:300]).path
    crc = write(tmp_path, "BTCUSDT-1m-2021-05.zip", crc_corrupt_zip()).path
    empty = write(tmp_path, "BTCUSDT-1m-2021-06.zip", b"").path
    code = main(["ingest", str(truncated), str(good), str(zip_bomb), str(crc), str(empty)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    for bad in (truncated, zip_bomb, crc, empty):
        assert f"error: {bad}:0: archive: " in err
    stored = pl.scan_parquet(str(home / "lake/minute_raw/**/*.parquet")).collect()
    assert stored["open_time"].to_list() == list(GOOD_TIMES)


def test_a_dagster_run_with_a_corrupt_source_succeeds_and_names_it_in_sources_clean(tmp_path, project_home):
    from crypto_assets.batch_runs import materialize_batch_range
    from crypto_assets.settings import load_settings
    from crypto_assets_tests.conftest import instance_at

    good = write(tmp_path, "BTCUSDT_good.csv", BODY).path
    corrupt = write(tmp_path, "BTCUSDT-1m-2021-03.zip", crc_corrupt_zip()).path
    gzipped = write(
        tmp_path, "BTCUSDT_gz.csv", gzip.compress(csv(HEADER, at("2021-03-26 05:04:00+01:00")).encode())
    ).path
    home = project_home([str(good), str(corrupt), str(gzipped)])
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize_batch_range(instance, load_settings(), "2021-03-01", "2021-03-01")
        assert result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path[-1] == "minute_raw"}
    clean = checks["sources_clean"]
    assert not clean.passed and clean.severity.value == "WARN"
    assert f"{corrupt}:0: archive: corrupt zip archive" in clean.metadata["unreadable_files"].value
    stored = pl.scan_parquet(str(home / "lake/minute_raw/**/*.parquet")).collect()
    assert stored["open_time"].to_list() == [*GOOD_TIMES, datetime(2021, 3, 26, 4, 4, tzinfo=UTC)]


def test_text_times_with_offsets_match_a_plain_reference_on_random_cases():
    """Random times, offsets and spellings against Python's own datetime arithmetic (seeded, so repeatable)."""
    import random
    from datetime import timedelta

    from crypto_assets.batch.transforms.minute import parse_open_time

    rng = random.Random(10)
    texts, expected = [], []
    for _ in range(2000):
        local = datetime(2012, 1, 1) + timedelta(minutes=rng.randrange(15 * 525_600))
        minutes = rng.choice([0, 0, rng.randrange(-14 * 60, 14 * 60 + 1), rng.choice([-300, 60, 120, 330, 345, 525])])
        sign, hh, mm = "-" if minutes < 0 else "+", abs(minutes) // 60, abs(minutes) % 60
        zone = rng.choice(
            [f"{sign}{hh:02d}:{mm:02d}", f"{sign}{hh:02d}{mm:02d}"] + ([f"{sign}{hh:02d}"] if not mm else [])
        )
        if minutes == 0:
            zone = rng.choice([zone, "Z", " UTC", "+00:00"])
        sep = rng.choice([" ", "T"])
        seconds = rng.choice([":00", "", ":00.000"])
        texts.append(f"{local:%Y-%m-%d}{sep}{local:%H:%M}{seconds}{zone}")
        expected.append((local - timedelta(minutes=minutes)).replace(tzinfo=UTC))
    frame = pl.LazyFrame({"time_raw": texts})
    parsed = parse_open_time(frame, epoch=False).collect()
    assert parsed["time_problem"].null_count() == len(texts)
    mismatches = [
        (t, got, want) for t, got, want in zip(texts, parsed["open_time"], expected, strict=True) if got != want
    ]
    assert not mismatches, mismatches[:5]


def test_reasons_agree_with_a_plain_reference_on_random_rows():
    """Random rows full of special values (null, NaN, inf, 1e308, -0.0, ...): a row is refused exactly when a
    plain Python statement of the rules says so."""
    import math
    import random
    from datetime import timedelta

    from crypto_assets.batch.transforms.minute import EARLIEST_TIME, MAX_PRICE, MAX_VOLUME, with_reasons

    rng = random.Random(7)
    specials = [None, float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1e308, 1e12, 1e13, 1e16, 1e17, 5e-9]

    def value() -> float | None:
        return rng.choice(specials) if rng.random() < 0.3 else rng.uniform(1, 3)

    base = datetime(2021, 3, 26, tzinfo=UTC)
    times = [None, datetime(2008, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC), base + timedelta(seconds=30)]
    rows = [
        {
            "open_time": rng.choice(times) if rng.random() < 0.2 else base + timedelta(minutes=rng.randrange(10**5)),
            "open": value(),
            "high": value(),
            "low": value(),
            "close": value(),
            "volume": value(),
            "extra_fields": rng.random() < 0.05,
            "time_problem": "open_time: ambiguous time zone 'CET'" if rng.random() < 0.05 else None,
        }
        for _ in range(20_000)
    ]

    def fine(x: float | None, limit: float, price: bool) -> bool:
        return x is not None and math.isfinite(x) and x <= limit and (x > 0 if price else x >= 0)

    def good(r: dict) -> bool:
        t = r["open_time"]
        prices = [r[c] for c in ("open", "high", "low", "close")]
        return (
            t is not None
            and EARLIEST_TIME <= t <= LATEST
            and t.second == 0
            and not r["extra_fields"]
            and r["time_problem"] is None
            and all(fine(p, MAX_PRICE, True) for p in prices)
            and fine(r["volume"], MAX_VOLUME, False)
            and r["low"] <= r["high"]
            and r["low"] <= r["open"] <= r["high"]
            and r["low"] <= r["close"] <= r["high"]
        )

    frame = pl.DataFrame(rows, schema_overrides={"open_time": pl.Datetime("us", "UTC"), "time_problem": pl.String})
    reasons = with_reasons(frame.lazy(), LATEST).collect()["reason"].to_list()
    expected = [good(r) for r in rows]
    assert [r is None for r in reasons] == expected
    assert 0 < sum(expected) < len(rows)


# -- edge cases found with inputs not seen before ----------------------------------------------------------------


def test_a_file_with_a_symbol_column_stores_each_symbols_rows_only_under_that_symbol(tmp_path, project_home, capsys):
    """A file of two symbols, ingested as each: every row lands under its own symbol, never under the other's,
    and the other symbol's rows are quarantined with a reason naming both."""
    from crypto_assets.cli import main

    home = project_home()
    mixed = write(tmp_path, "prices.csv", symboled("BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT")).path
    assert main(["ingest", "--symbol", "BTCUSDT", str(mixed)]) == 0
    assert main(["ingest", "--symbol", "ETHUSDT", str(mixed)]) == 0
    capsys.readouterr()
    stored = pl.scan_parquet(str(home / "lake/minute_raw/**/*.parquet"), hive_partitioning=False).collect()
    by_symbol = {s: sorted(stored.filter(pl.col("symbol") == s)["open_time"].to_list()) for s in ("BTCUSDT", "ETHUSDT")}
    assert by_symbol == {"BTCUSDT": [GOOD_TIMES[0], GOOD_TIMES[2]], "ETHUSDT": [GOOD_TIMES[1], GOOD_TIMES[3]]}
    quarantine = pl.read_parquet(home / "lake/quarantine/symbol=ETHUSDT/year=2021/month=03/part-0.parquet")
    assert quarantine["line"].to_list() == [2, 4]
    assert quarantine["reason"][0] == "symbol: BTCUSDT, but the file is ingested as ETHUSDT"


def test_a_sources_entry_with_a_symbol_the_column_disagrees_with_quarantines_those_rows(tmp_path, project_home):
    from crypto_assets.batch_runs import materialize_batch_range
    from crypto_assets.settings import load_settings
    from crypto_assets_tests.conftest import instance_at

    mixed = write(tmp_path, "mixed.csv", symboled("ETHUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT")).path
    home = project_home(extra=f'[[sources]]\npath = "{mixed}"\nsymbol = "ETHUSDT"\n')
    with instance_at(tmp_path / "dagster") as instance:
        assert materialize_batch_range(instance, load_settings(), "2021-03-01", "2021-03-01").success
    stored = pl.scan_parquet(str(home / "lake/minute_raw/**/*.parquet"), hive_partitioning=False).collect()
    assert stored["symbol"].unique().to_list() == ["ETHUSDT"]
    assert stored["open_time"].to_list() == [GOOD_TIMES[0], *GOOD_TIMES[2:]]
    quarantine = pl.read_parquet(home / "lake/quarantine/symbol=ETHUSDT/year=2021/month=03/part-0.parquet")
    assert (
        quarantine["line"].to_list() == [3]
        and "BTCUSDT, but the file is ingested as ETHUSDT" in quarantine["reason"][0]
    )


# Peak RSS of a child that reads one file (VmHWM: see BOMB_SCRIPT), and what it read.
READ_SCRIPT = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from crypto_assets.batch.minute_ingest import read_source
from crypto_assets.batch.sources.discovery import SourceFile
import polars as pl
rows = read_source(SourceFile(Path(sys.argv[1]), "BTCUSDT", 0), datetime(2030, 1, 1, tzinfo=UTC))[0].collect()
print(rows.filter(pl.col("reason").is_null())["line"].to_list(), rows.filter(pl.col("reason").is_not_null()).height)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) // 1024)
"""


def peak_read(path: Path) -> tuple[str, int]:
    import subprocess
    import sys

    from crypto_assets_tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-c", READ_SCRIPT, str(path)], capture_output=True, text=True, cwd=REPO, check=True
    )
    lines, rss_mb = done.stdout.strip().splitlines()
    return lines, int(rss_mb)


@pytest.mark.integration  # measures the peak memory of child processes
@pytest.mark.parametrize("blank", [b"\n", b"  \r\n"], ids=["empty", "spaces_crlf"])
def test_millions_of_blank_lines_are_skipped_in_bounded_memory(tmp_path, blank):
    """5 million blank lines between good rows: the old reader held a row for each (~85 bytes, 500 MB)."""
    path = tmp_path / "BTCUSDT_blank.csv"
    with path.open("wb") as out:
        out.write(csv(HEADER, GOOD[0]).encode())
        out.write(blank * 3_000_000)
        out.write(csv(GOOD[1], "", GOOD[2]).encode())
        out.write(blank * 2_000_000)
        out.write(csv(GOOD[3]).encode())
    baseline = peak_read(write(tmp_path, "BTCUSDT_small.csv", BODY).path)[1]
    lines, rss_mb = peak_read(path)
    assert lines == "[2, 3000003, 3000005, 5000006] 0"
    assert rss_mb - baseline < 150, f"peak RSS {rss_mb} MB, {baseline} MB for a 4-line file"


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_blank_lines_keep_the_line_numbers_of_the_rows_around_them(tmp_path, blank):
    """Runs of blank lines anywhere (after the header, between rows, at the end): quarantined rows still name
    their own line."""
    bad = GOOD[3].replace("51790.0", "-1")
    text = csv(HEADER, *[blank] * 3, GOOD[0], blank, GOOD[1], *[blank] * 5, bad, GOOD[2], *[blank] * 4)
    good, quarantined = good_and_bad(write(tmp_path, "BTCUSDT_runs.csv", text))
    assert good["line"].to_list() == [5, 7, 14]
    assert quarantined["line"].to_list() == [13]


@pytest.mark.parametrize(
    ("text", "has_run"),
    [(b"a\nb\n", False), (b"a\n\nb\n\n", False), (b"a\n\n\nb", True), (b"a\n  \n \t\r\nb", True)],
)
def test_a_run_of_blank_lines_is_found_across_read_blocks(tmp_path, text, has_run):
    path = tmp_path / "f.csv"
    path.write_bytes(text)
    assert [formats._has_blank_run(path, size) for size in (1, 2, 3, 1024)] == [has_run] * 4


def test_blank_lines_in_a_kaggle_file_with_a_bad_epoch_keep_the_time_as_written(tmp_path):
    text = csv(KAGGLE, KAGGLE_ROWS[0], *[""] * 1000, at("yesterday"), *[""] * 10, KAGGLE_ROWS[1])
    rows = rows_of(write(tmp_path, "BTCUSDT_k.csv", text))
    bad = quarantine_rows(rows.lazy()).collect()
    assert rows.filter(pl.col("reason").is_null())["line"].to_list() == [2, 1014]
    assert bad["line"].to_list() == [1003] and "as written: 'yesterday'" in bad["reason"][0]


def _fifo(tmp_path: Path) -> Path:
    import os

    path = tmp_path / "BTCUSDT_pipe.csv"
    os.mkfifo(path)
    return path


def test_a_fifo_or_a_device_is_named_for_what_it_is_and_never_read(tmp_path):
    import threading

    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    fifo = _fifo(tmp_path)
    found, problems = discover_sources(
        [SourceSpec(str(fifo)), SourceSpec("/dev/null", "BTCUSDT"), SourceSpec(str(tmp_path / "BTCUSDT_gone.csv"))],
        ["BTCUSDT"],
    )
    assert not found
    assert [(p.field, p.line) for p in problems] == [("path", 0)] * 3
    assert "is a FIFO (named pipe), not a regular file" in str(problems[0]) and str(fifo) in str(problems[0])
    assert "/dev/null:0: path: is a character device, not a regular file" in str(problems[1])
    assert "no such file" in str(problems[2])

    # Read directly, a FIFO is refused without opening it (an open would wait for a writer forever).
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            rows_of(SourceFile(fifo, "BTCUSDT", 0))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # unblock it before failing
        import os

        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
        pytest.fail("reading the FIFO blocked")
    assert isinstance(outcome[0], SourceFormatError) and "is a FIFO" in str(outcome[0])


def test_ingest_names_a_fifo_and_a_device_and_stores_the_good_file(tmp_path, project_home, capsys):
    from crypto_assets.cli import main

    home = project_home()
    fifo = _fifo(tmp_path)
    good = write(tmp_path, "BTCUSDT_good.csv", BODY).path
    code = main(["ingest", str(fifo), "/dev/zero", str(good), "--symbol", "BTCUSDT"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {fifo}:0: path: is a FIFO (named pipe), not a regular file" in err
    assert "error: /dev/zero:0: path: is a character device, not a regular file" in err
    stored = pl.scan_parquet(str(home / "lake/minute_raw/**/*.parquet")).collect()
    assert stored["open_time"].to_list() == list(GOOD_TIMES)


@pytest.fixture
def reports_server(tmp_path):
    """The real reports server on a free port, serving a reports folder with dotfiles beside a report."""
    import threading

    from crypto_assets.serving.processes import free_port
    from crypto_assets.serving.reports import make_server

    reports = tmp_path / "reports"
    (reports / ".git").mkdir(parents=True)
    (reports / "sub").mkdir()
    (reports / "forecast_BTCUSDT.html").write_text("<html>report</html>")
    for hidden in (".env", ".git/config", "sub/.notes.html", ".forecast_ETHUSDT.html"):
        (reports / hidden).write_text("secret=1")
    (reports / "alias.html").symlink_to(reports / ".env")  # a plain name leading to a dotfile
    (reports / "dir.html").symlink_to(reports / ".git", target_is_directory=True)
    server = make_server(reports, free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.integration  # the reports server
@pytest.mark.parametrize(
    "path",
    [
        "/.env",
        "/.git/config",
        "/sub/.notes.html",
        "/.forecast_ETHUSDT.html",
        "/%2eenv",
        "/%2Egit/config",
        "/sub/%2enotes.html",
        "/alias.html",
        "/dir.html/config",
        "/.missing",
    ],
)
def test_the_reports_server_never_serves_a_dotfile(reports_server, path):
    import urllib.error
    import urllib.request

    for method in ("GET", "HEAD"):
        request = urllib.request.Request(f"http://127.0.0.1:{reports_server}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 404 and b"secret" not in raised.value.read(), (method, path)
    with urllib.request.urlopen(f"http://127.0.0.1:{reports_server}/forecast_BTCUSDT.html", timeout=10) as ok:
        assert ok.read() == b"<html>report</html>"


def test_sql_and_status_tell_of_a_merge_a_killed_ingest_left_and_the_command_that_completes_it(
    tmp_path, project_home, capsys
):
    """The state a kill leaves between landing a file and the end of its merge (the manifest lists it as not
    merged): sql warns on stderr, status says so in text and JSON; the command they name completes it."""
    import json
    import shlex

    from crypto_assets.batch.landing import Manifest, land
    from crypto_assets.batch.minute_ingest import ingest_lock
    from crypto_assets.cli import main
    from crypto_assets.settings import load_settings

    home = project_home()
    first = write(tmp_path, "BTCUSDT_first.csv", csv(HEADER, *GOOD[:2])).path
    assert main(["ingest", str(first)]) == 0
    assert main(["status"]) == 0
    assert "pending merge" not in capsys.readouterr().out

    settings = load_settings()
    second = write(tmp_path, "BTCUSDT second.csv", csv(HEADER, *GOOD[2:])).path
    with ingest_lock(settings.lake_dir, settings.landing_dir):  # what ingest_files does before its merge
        manifest = Manifest.load(settings.landing_dir, tidy=True)
        land(SourceFile(second, "BTCUSDT", 0), manifest)
        manifest.save()

    assert main(["sql", "SELECT count(*) AS n FROM minute_raw", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["n", "2"]  # the half-merged lake, as it is
    assert err.startswith("warning: minute_raw has a pending merge: ingest #2")
    command = f"crypto-assets ingest {shlex.quote(str(second))}"
    assert str(second) in err and command in err and len(err.strip().splitlines()) == 1

    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert "pending merge" in text and command in text
    assert main(["status", "--json"]) == 0
    pending = json.loads(capsys.readouterr().out)["pending_merge"]
    assert pending["command"] == command
    assert [(i["order"], i["symbol"], i["original"]) for i in pending["ingests"]] == [(2, "BTCUSDT", str(second))]

    assert main(shlex.split(command)[1:]) == 0  # the command it names
    capsys.readouterr()
    assert main(["sql", "SELECT count(*) AS n FROM minute_raw", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["n", "4"] and "pending" not in err
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending_merge"] is None
    assert home.is_dir()


def test_a_pending_merge_whose_original_file_is_gone_names_the_landing_copy(tmp_path, project_home, capsys):
    import shlex

    from crypto_assets.batch.landing import Manifest, land
    from crypto_assets.batch.minute_ingest import ingest_lock
    from crypto_assets.cli import main
    from crypto_assets.settings import load_settings

    project_home()
    settings = load_settings()
    gone = write(tmp_path, "BTCUSDT_gone.csv", BODY).path
    with ingest_lock(settings.lake_dir, settings.landing_dir):
        manifest = Manifest.load(settings.landing_dir, tidy=True)
        copy = manifest.path_of(land(SourceFile(gone, "BTCUSDT", 0), manifest).entry)
        manifest.save()
    gone.unlink()
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    command = f"crypto-assets ingest {shlex.quote(str(copy))}"
    assert command in text
    assert main(shlex.split(command)[1:]) == 0
    capsys.readouterr()
    assert main(["status"]) == 0 and "pending merge" not in capsys.readouterr().out
    stored = pl.scan_parquet(str(settings.lake_dir / "minute_raw/**/*.parquet")).collect()
    assert stored["open_time"].to_list() == list(GOOD_TIMES)


from hypothesis import given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crypto_assets.serving.lake_sql import SqlError, check_lake_only, run_sql  # noqa: E402

FILE_FUNCTIONS = ("read_csv", "read_parquet", "read_json", "read_ndjson", "read_ipc", "read_excel", "read_delta")


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sql")
    source = write(folder, "BTCUSDT_1m.csv", BODY)
    ingest_window([source], folder / "lake", ["BTCUSDT"], *WINDOW, latest_time=LATEST)
    return folder / "lake"


@pytest.mark.parametrize(
    "literal",
    [
        "thread_x",
        "read_csv('/etc/passwd')",
        "READ_PARQUET ( 'x' )",
        "it's read_json(",
        "-- read_csv(",
        "/* read_ipc( */",
        '"read_csv"(',
        "$$read_csv($$",
    ],
)
def test_sql_filters_on_any_string_literal(small_lake, literal):
    query = f"SELECT count(*) AS n FROM minute_raw WHERE symbol = {sql_literal(literal)} OR symbol = 'BTCUSDT'"
    assert run_sql(small_lake, query)["n"].to_list() == [4]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT symbol AS \"read_csv('x')\" FROM minute_raw -- read_csv('x')",
        "SELECT count(*) AS n FROM minute_raw /* read_csv('x') /* nested */ read_json('y') */",
        "SELECT `read_me` FROM (SELECT symbol AS `read_me` FROM minute_raw) LIMIT 0",
        "SELECT read_csv FROM (SELECT symbol AS read_csv FROM minute_raw) LIMIT 0",
        "SELECT count(*) AS n FROM minute_raw WHERE symbol = $$thread_x$$",  # read strictly, still no file function
    ],
)
def test_sql_quoted_names_and_comments_that_mention_a_file_function_are_no_call(small_lake, query):
    run_sql(small_lake, query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('x')",
        "SELECT * FROM READ_PARQUET ( 'x' )",
        "SELECT * FROM `read_csv`('x')",
        "SELECT * FROM \"read_ipc\"\n('x')",
        "SELECT * FROM read_json -- a comment\n('x')",
        "SELECT * FROM read_ndjson /* a /* nested */ comment */ ('x')",
        "SELECT 'it''s' AS s, * FROM read_csv('x') WHERE 'a' = 'a'",
        # what another SQL dialect would read as a string is code to Polars: no escape with a backslash
        "SELECT 'a\\' AS s FROM read_csv('x') --'",
        # forms Polars reads but this check does not need to tell apart: any file function name refuses them
        "SELECT $$ ' $$ AS s FROM read_csv('x') --'",
        "SELECT 1 AS a$$, * FROM read_csv('x') --$$",
        "SELECT E'\\'' AS s FROM read_csv('x') --'",
    ],
)
def test_sql_file_functions_outside_literals_are_refused(small_lake, query):
    with pytest.raises(SqlError, match="reads files outside the lake and is off"):
        run_sql(small_lake, query)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
        | st.sampled_from([*FILE_FUNCTIONS, "(", "'", '"', "`", "--", "/*", "*/", "$$", "\\", "\n"]),
        max_size=12,
    )
)
def test_a_query_filtering_on_any_literal_is_never_refused(pieces):
    text = "".join(pieces)
    check_lake_only(f"SELECT * FROM minute_raw WHERE symbol = {sql_literal(text)} AND open > 0")


GAPS = st.sampled_from([" ", "", "\n", "\t", " /* note */ ", " -- note\n", "/* a /* b */ c */"])


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    function=st.sampled_from(FILE_FUNCTIONS),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    quote=st.sampled_from(["", '"', "`"]),
    gap=GAPS,
    before=st.text(max_size=20),
    after=st.text(max_size=20),
)
def test_a_query_calling_a_file_function_outside_a_literal_is_always_refused(function, case, quote, gap, before, after):
    name = f"{quote}{case(function)}{quote}"
    query = f"SELECT {sql_literal(before)} AS a, * FROM {name}{gap}({sql_literal('/tmp/x.csv')}) WHERE s = {sql_literal(after)}"
    with pytest.raises(SqlError):
        check_lake_only(query)
