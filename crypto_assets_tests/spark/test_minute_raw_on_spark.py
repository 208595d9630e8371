"""``minute_raw`` on both engines from the same sources: the same month files, quarantine and conflicts.

The sources are a real Binance month pair, a second symbol, and a small file that breaks rules on some rows
and disagrees with the real file on one minute. Each engine ingests into its own lake twice (the second run
merges with the rows the first stored), and after each run every file of the three datasets is compared.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pyspark.sql import SparkSession

from crypto_assets.batch.backfill.store import EXCHANGE_MINUTES, write_partition
from crypto_assets.batch.minute_ingest import (
    CONFLICTS_DATASET,
    MINUTE_DATASET,
    QUARANTINE_DATASET,
    SourceReport,
    ingest_window,
)
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.lake.atomic import TEMP_PREFIX
from crypto_assets.lake.layout import Month
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets.settings import DEFAULT_SYMBOLS, Settings, SparkSettings
from crypto_assets.spark.ingest import spark_merge
from crypto_assets_tests.spark.session import start_session

pytestmark = pytest.mark.slow  # a Spark session and 100,000 real minutes on each engine

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START, END = datetime(2021, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)
LATEST = datetime(2030, 1, 1, tzinfo=UTC)

# 2021-03-26 03:00 is the real file's first minute: this file's version of it (listed first, so it wins)
# differs, and 03:01 is given twice identically (a duplicate, not a conflict).
SMALL_FILE = """timestamp,open,high,low,close,volume
2021-03-26 03:00:00,51000.0,51900.0,50900.0,51800.0,1.5
2021-03-26 03:00:30,51000.0,51900.0,50900.0,51800.0,1.5
2021-03-26 03:02:00,-5,51900.0,50900.0,51800.0,1.5
not a time,51000.0,51900.0,50900.0,51800.0,1.5
2021-03-25 00:00:00,51000.0,50000.0,50900.0,51800.0,2.0
2021-03-25 00:01:00,51000.0,51900.0,50900.0,51800.0,2.0
2021-03-25 00:01:00,51000.0,51900.0,50900.0,51800.0,2.0
"""


# ETH's file starts at 2021-08-09 03:00: the exchange has the minute before it, and its own version of 03:00.
EXCHANGE_CANDLES = pl.DataFrame(
    {
        "symbol": ["ETHUSDT", "ETHUSDT"],
        "open_time": [datetime(2021, 8, 9, 2, 59, tzinfo=UTC), datetime(2021, 8, 9, 3, 0, tzinfo=UTC)],
        "open": [3000.0, 3000.0],
        "high": [3010.0, 3010.0],
        "low": [2990.0, 2990.0],
        "close": [3005.0, 3005.0],
        "volume": [1.0, 1.0],
    },
    schema=MINUTE_SCHEMA,
)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    already_running = SparkSession.getActiveSession()
    home = Path(tmp_path_factory.mktemp("spark_home"))
    session = start_session(Settings(home=home, symbols=DEFAULT_SYMBOLS, spark=SparkSettings(master="local[2]")))
    yield session
    if already_running is None:
        session.stop()


def sources(shared_data: Path, small: Path) -> list[SourceFile]:
    return [
        SourceFile(small, "BTCUSDT", 0),
        SourceFile(shared_data / "binance_spot_1m" / "2021" / "BTCUSDT_1m.csv", "BTCUSDT", 1),
        SourceFile(shared_data / "binance_spot_1m" / "2021" / "ETHUSDT_1m.csv", "ETHUSDT", 2),
        SourceFile(small.with_name("missing.csv"), "ETHUSDT", 3),  # unreadable: reported, skipped
    ]


def reports(sources: list[SourceReport], lake: Path) -> list[SourceReport]:
    """The reports with the lake's own path left out (the exchange's candles are read from each engine's lake)."""
    return [replace(r, path=r.path.replace(str(lake), "<lake>")) for r in sources]


def files(lake: Path) -> dict[str, pl.DataFrame]:
    return {
        str(p.relative_to(lake)): pl.read_parquet(p)
        for dataset in (MINUTE_DATASET, QUARANTINE_DATASET, CONFLICTS_DATASET)
        for p in sorted((lake / dataset).rglob("*.parquet"))
    }


def assert_same_lake(polars_lake: Path, spark_lake: Path) -> None:
    expected, actual = files(polars_lake), files(spark_lake)
    assert sorted(actual) == sorted(expected)
    for name, frame in expected.items():
        assert actual[name].schema == frame.schema, name
        assert actual[name].equals(frame), name  # same rows in the same order, nulls included
    assert not list(spark_lake.rglob(f"{TEMP_PREFIX}*"))


def test_minute_raw_on_spark_writes_the_polars_engines_files(spark, shared_data, tmp_path):
    small = tmp_path / "BTCUSDT_fixes.csv"
    small.write_text(SMALL_FILE)
    given = sources(shared_data, small)
    lakes = {"polars": tmp_path / "polars", "spark": tmp_path / "spark"}
    for lake in lakes.values():  # fetched candles: they only fill minutes no file has
        write_partition(EXCHANGE_CANDLES, lake, EXCHANGE_MINUTES, "ETHUSDT", Month(2021, 8))
    for run in range(2):
        if run == 1:  # the second run: the small file changed, so stored rows lose to a new version
            small.write_text(SMALL_FILE.replace("51800.0,1.5\n2021-03-26 03:00:30", "51700.0,1.5\n2021-03-26 03:00:30"))
        results = {
            "polars": ingest_window(given, lakes["polars"], SYMBOLS, START, END, latest_time=LATEST),
            "spark": ingest_window(
                given, lakes["spark"], SYMBOLS, START, END, latest_time=LATEST, merge=spark_merge(spark)
            ),
        }
        assert_same_lake(lakes["polars"], lakes["spark"])
        ours, theirs = results["spark"], results["polars"]
        assert_frame_equal(ours.frame, theirs.frame, check_exact=True)
        assert_frame_equal(ours.conflicts, theirs.conflicts, check_exact=True)
        assert reports(ours.sources, lakes["spark"]) == reports(theirs.sources, lakes["polars"])
        for name in ("rows_read", "duplicates_removed", "quarantined"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert ours.minute.rows == theirs.minute.rows
        assert [f.relative_to(lakes["spark"]) for f in ours.minute.files] == [
            f.relative_to(lakes["polars"]) for f in sorted(theirs.minute.files)
        ]

    # What the files hold, so the comparison cannot pass on two empty lakes.
    # The real minutes (BTC's 03:00 replaced), the small file's earlier minute and the exchange's 02:59.
    assert results["spark"].minute.rows == 100_000 + 2
    eth = pl.read_parquet(lakes["spark"] / CONFLICTS_DATASET / "symbol=ETHUSDT" / "year=2021" / "month=08")
    assert eth["source"].to_list() == [EXCHANGE_MINUTES]
    assert results["spark"].quarantined == 4
    assert [s.error is not None for s in results["spark"].sources] == [False, False, False, True, False]
    assert results["spark"].sources[-1].format == EXCHANGE_MINUTES  # read after its symbol's files, as by Polars
    conflicts = pl.read_parquet(lakes["spark"] / CONFLICTS_DATASET / "symbol=BTCUSDT" / "year=2021" / "month=03")
    # The real file's 03:00 lost in both runs; the first run's version lost to the second's, as a stored row.
    assert conflicts.height == 2 and set(conflicts["source"]) == {
        str(given[1].path),
        "minute_raw (rows stored before this merge)",
    }
    unparsed = pl.read_parquet(lakes["spark"] / QUARANTINE_DATASET / "symbol=BTCUSDT" / "unparsed.parquet")
    assert unparsed["reason"].str.contains("unparseable").all() and unparsed.height == 1
