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
