"""The Spark transforms against the Polars ones on tiny tables: the same rows, bit for bit."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_assets.batch import checks
from crypto_assets.batch.pipeline import POLARS
from crypto_assets.schema import DAILY_SCHEMA, MINUTE_SCHEMA
from crypto_assets.spark.engine import SparkEngine


def write(frame: pl.DataFrame, path) -> list:
    frame.write_parquet(path)
    return [path]


def assert_identical(polars_frame: pl.DataFrame, spark_frame: pl.DataFrame) -> None:
    assert_frame_equal(spark_frame, polars_frame, check_exact=True)
    for name, dtype in polars_frame.schema.items():
        if dtype == pl.Float64:  # equal values could still differ in sign of zero; compare the bits
            a, b = (f[name].fill_null(math.nan).to_numpy().view(np.int64) for f in (polars_frame, spark_frame))
            assert (a == b).all(), name


@pytest.fixture
def utc_ahead_session(spark):
    """The session in a non-UTC zone: UTC days must not depend on it."""
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tokyo")
    yield spark
    spark.conf.set("spark.sql.session.timeZone", "UTC")


def test_daily_aggregation_matches_polars_bit_for_bit(utc_ahead_session, tmp_path):
    t = datetime(2024, 3, 1, 23, 58, tzinfo=UTC)
    rows = [  # out of order, across a UTC midnight, two symbols
        ("X1", t + timedelta(minutes=2), 12.0, 13.0, 11.5, 12.5, 0.3),
        ("X1", t, 10.0, 11.0, 9.0, 10.5, 1e15),
        ("X1", t + timedelta(minutes=1), 10.5, 14.0, 10.0, 12.0, 0.1),
        ("X1", t + timedelta(minutes=3), 20.0, 21.0, 19.0, 20.5, 0.2),
        ("X1", t + timedelta(minutes=4), 20.5, 22.0, 20.0, 21.0, 1e-8),
        ("Y2", t, 5.0, 6.0, 4.0, 5.5, math.inf),
        ("Y2", t + timedelta(minutes=1), 5.5, 6.0, 5.0, 5.0, 2.0),
    ]
    rng = np.random.default_rng(3)
    day = datetime(2024, 3, 5, tzinfo=UTC)
    rows += [
        ("Y2", day + timedelta(minutes=i), 1.0, 1.0, 1.0, 1.0, float(v))
        for i, v in enumerate(rng.lognormal(0, 4, 1440))
    ]
    minutes = pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")
    files = write(minutes, tmp_path / "minutes.parquet")

    expected = POLARS.daily_raw(files)
    result = SparkEngine(utc_ahead_session).daily_raw(files)
    assert_identical(expected, result)
    assert result["date"].to_list() == [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 1), date(2024, 3, 5)]
    assert result.row(0) == ("X1", date(2024, 3, 1), 10.0, 14.0, 9.0, 12.0, math.fsum([1e15, 0.1]), 2)
    assert result["volume"][1] == math.fsum([0.3, 0.2, 1e-8]) and result["volume"][2] == math.inf


def daily(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")


def test_calendar_fill_and_moving_averages_match_polars_bit_for_bit(spark, tmp_path):
    rng = np.random.default_rng(9)
    start = date(2024, 1, 1)
    rows = []
    for symbol, days, gaps in (("X1", 80, {3, 4, 40, 41, 42, 79}), ("Y2", 45, {10})):
        for i in range(days):
            if i not in gaps:
                c = float(np.round(rng.lognormal(8, 1), 2))
                rows.append((symbol, start + timedelta(days=i), c, c * 1.01, c * 0.99, c, float(i), 1440))
    files = write(daily(rows), tmp_path / "daily.parquet")
    # X1's calendar ends before its last candle (a window's end), Y2's runs on past its last one.
    through = {"X1": start + timedelta(days=70), "Y2": start + timedelta(days=50)}

    expected = POLARS.daily_filled(files, through)
    result = SparkEngine(spark).daily_filled(files, through)
    assert_identical(expected, result)
    assert result.filter(pl.col("symbol") == "Y2")["date"].max() == through["Y2"]
    assert result["is_filled"].sum() == 2 + 3 + 1 + 6  # X1 gaps, Y2 gap, and Y2 from its last candle to day 50
    assert result["ma30"].null_count() == 29 * 2
    assert checks.moving_averages_correct(result, start).passed
    assert checks.no_missing_days(result).passed

    prophet_files = write(result, tmp_path / "filled.parquet")
    assert_identical(POLARS.prophet_input(prophet_files), SparkEngine(spark).prophet_input(prophet_files))
