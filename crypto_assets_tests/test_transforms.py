"""The pure transforms and checks on tiny tables whose answers can be worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crypto_assets import quality
from crypto_assets.batch import checks
from crypto_assets.batch.pipeline import build_daily_filled
from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.batch.transforms.filled import daily_filled, fill_calendar
from crypto_assets.batch.transforms.prophet import prophet_input
from crypto_assets.lake.atomic import atomic_target, write_parquet_atomic
from crypto_assets.lake.datasets import write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.schema import DAILY_SCHEMA, epoch_to_datetime
from crypto_assets_tests.minute_checks import minutes_complete


def minutes(rows):
    return pl.DataFrame(
        rows, schema=["symbol", "open_time", "open", "high", "low", "close", "volume"], orient="row"
    ).with_columns(pl.col("open_time").dt.replace_time_zone("UTC"))


def daily(rows):
    return pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")


def test_daily_candle_takes_first_open_last_close_extremes_and_summed_volume():
    t = datetime(2024, 3, 1, 0, 0)
    frame = minutes(
        [  # deliberately out of order
            ("BTC1", t + timedelta(minutes=2), 12.0, 13.0, 11.5, 12.5, 3.0),
            ("BTC1", t, 10.0, 11.0, 9.0, 10.5, 1.0),
            ("BTC1", t + timedelta(minutes=1), 10.5, 14.0, 10.0, 12.0, 2.0),
            ("BTC1", t + timedelta(days=1), 20.0, 21.0, 19.0, 20.5, 5.0),
        ]
    )
    result = aggregate_daily(frame.lazy()).collect()
    assert result.rows() == [
        ("BTC1", date(2024, 3, 1), 10.0, 14.0, 9.0, 12.5, 6.0, 3),
        ("BTC1", date(2024, 3, 2), 20.0, 21.0, 19.0, 20.5, 5.0, 1),
    ]


def test_missing_days_are_forward_filled_and_flagged():
    frame = daily(
        [
            ("X1", date(2024, 1, 1), 1.0, 2.0, 0.5, 1.5, 10.0, 1440),
            ("X1", date(2024, 1, 4), 2.0, 3.0, 1.5, 2.5, 10.0, 1440),
        ]
    )
    result = fill_calendar(frame.lazy()).collect()
    assert result["date"].to_list() == [date(2024, 1, d) for d in range(1, 5)]
    assert result["is_filled"].to_list() == [False, True, True, False]
    filled = result.filter(pl.col("is_filled"))
    assert filled.select("open", "high", "low", "close", "volume", "minute_count").unique().rows() == [
        (1.5, 1.5, 1.5, 1.5, 0.0, 0)
    ]


def test_moving_averages_equal_a_plain_reference_and_are_null_before_a_full_window():
    closes = np.random.default_rng(7).lognormal(size=60)
    frame = daily([("X1", date(2024, 1, 1) + timedelta(days=i), c, c, c, c, 1.0, 1440) for i, c in enumerate(closes)])
    result = daily_filled(frame.lazy()).collect()
    for name, size in (("ma7", 7), ("ma30", 30)):
        values = result[name].to_list()
        assert all(v is None for v in values[: size - 1])
        for i in range(size - 1, len(closes)):
            assert values[i] == pytest.approx(sum(closes[i - size + 1 : i + 1]) / size, rel=1e-12)
    assert checks.moving_averages_correct(result, date(2024, 1, 1)).passed


def test_month_partition_looks_back_for_ma30_and_fills_gaps_at_month_end(tmp_path):
    # Data for Dec-Mar with Jan 30-31 missing; 1 March needs Jan 31 for its MA30.
    days = [date(2023, 12, 1) + timedelta(days=i) for i in range(121)]
    days = [d for d in days if d not in (date(2024, 1, 30), date(2024, 1, 31))]
    frame = daily(
        [("X1", d, float(i + 1), float(i + 1), float(i + 1), float(i + 1), 1.0, 1440) for i, d in enumerate(days)]
    )
    window = (datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    write_months(frame, tmp_path, "daily_raw", "date", ["X1"], months_between(*window))

    whole = daily_filled(frame.lazy()).collect()
    january = build_daily_filled(tmp_path, ["X1"], datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    march = build_daily_filled(tmp_path, ["X1"], datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    assert january.frame["date"].max() == date(2024, 1, 31)
    assert january.frame.filter(pl.col("is_filled"))["date"].to_list() == [date(2024, 1, 30), date(2024, 1, 31)]
    expected = whole.filter(pl.col("date") >= date(2024, 3, 1))
    assert march.frame.equals(expected)
    assert march.frame["ma30"].null_count() == 0


def test_prophet_input_has_ds_y_symbol():
    frame = daily([("X1", date(2024, 1, 1), 1.0, 1.0, 1.0, 3.0, 1.0, 1440)])
    result = prophet_input(daily_filled(frame.lazy())).collect()
    assert result.columns == ["ds", "y", "symbol"] and result.row(0) == (date(2024, 1, 1), 3.0, "X1")


def test_epoch_units_are_told_apart_by_magnitude():
    expected = datetime(2024, 3, 1, 12, 34, tzinfo=UTC)
    seconds = expected.timestamp()
    values = pl.Series([seconds, seconds * 1e3, seconds * 1e6, seconds * 1e9])
    parsed = pl.select(epoch_to_datetime(pl.lit(values))).to_series().to_list()
    assert parsed == [expected] * 4


def test_checks_catch_what_they_are_for():
    t = datetime(2024, 1, 1, tzinfo=UTC)
    bad = minutes(
        [
            ("X1", t, 1.0, 2.0, 0.5, 1.5, 1.0),
            ("X1", t, 1.0, 2.0, 0.5, 1.5, 1.0),  # duplicate
            ("X1", t + timedelta(minutes=5), 3.0, 2.0, 0.5, 1.5, 1.0),  # open above high, after a gap
        ]
    )
    assert not checks.unique_keys(bad, ["symbol", "open_time"]).passed
    assert checks.unique_keys(bad.unique(subset=["symbol", "open_time"]).reverse(), ["symbol", "open_time"]).passed
    assert checks.ohlc_consistent(bad).metadata["inconsistent_rows"] == 1
    gaps = minutes_complete(bad.unique(subset=["symbol", "open_time"]))
    assert not gaps.passed and gaps.severity == quality.Severity.WARN and gaps.metadata["missing_minutes"] == 4

    broken = daily([("X1", date(2024, 1, 1), 1.0, 1.0, 1.0, 1.0, 1.0, 1440)] * 2)
    assert not checks.no_missing_days(broken.with_columns(pl.lit(False).alias("is_filled"))).passed
    filled = daily_filled(
        daily(
            [("X1", date(2024, 1, 1) + timedelta(days=i), 1.0, 1.0, 1.0, float(i), 1.0, 1440) for i in range(10)]
        ).lazy()
    ).collect()
    assert checks.moving_averages_correct(filled, date(2024, 1, 1)).passed
    tampered = filled.with_columns(
        pl.when(pl.col("date") == date(2024, 1, 9)).then(0.0).otherwise(pl.col("ma7")).alias("ma7")
    )
    assert checks.moving_averages_correct(tampered, date(2024, 1, 1)).metadata["mismatches"] == 1
    assert not checks.schema_matches(filled.drop("ma7"), pl.Schema(filled.schema)).passed

    now = datetime(2024, 1, 10, 12, tzinfo=UTC)
    assert checks.fresh(date(2024, 1, 9), 48, now).passed
    assert not checks.fresh(date(2024, 1, 1), 48, now).passed


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "part-0.parquet"
    write_parquet_atomic(pl.DataFrame({"a": [1]}), path)
    with pytest.raises(RuntimeError), atomic_target(path) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash midway")
    assert pl.read_parquet(path)["a"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["part-0.parquet"]
