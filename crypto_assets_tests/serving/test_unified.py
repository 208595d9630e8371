"""The unified view's pure transforms and checks on tiny tables worked out by hand."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.batch.transforms.filled import daily_filled
from crypto_assets.schema import FILLED_SCHEMA, MINUTE_SCHEMA
from crypto_assets.serving import checks
from crypto_assets.serving.unified import (
    AS_OF,
    BATCH,
    SPEED,
    UNIFIED_SCHEMA,
    latest_per_key,
    running_days,
    running_minutes,
    seam_of,
    unify,
)
from crypto_assets_tests.serving.helpers import (
    daily_minutes,
    minute_rows,
    speed_candles,
    utc,
)

D0 = date(2024, 1, 1)
SYMBOL = "BTCUSDT"


def days(first: int, count: int) -> list[date]:
    return [D0 + timedelta(days=first + i) for i in range(count)]


def batch_view(minutes: pl.DataFrame, written) -> pl.DataFrame:
    filled = daily_filled(aggregate_daily(minutes.lazy())).collect()
    return filled.with_columns(pl.lit(written, AS_OF).alias("as_of"))


def build(batch: pl.DataFrame, speed: pl.DataFrame, batch_minutes: pl.DataFrame | None = None):
    """The unified view of a batch view, speed candles and the batch minutes after the seam (with as_of)."""
    seam = seam_of(batch.lazy())
    if batch_minutes is None:
        batch_minutes = pl.DataFrame(schema={**MINUTE_SCHEMA, "as_of": AS_OF})
    running = running_days(running_minutes(speed.lazy(), batch_minutes.lazy(), seam))
    return unify(batch.lazy(), running, seam).collect(), seam


def reference_ma(closes: list[float], size: int) -> float:
    return sum(closes[-size:]) / size


def test_closed_batch_days_win_and_moving_averages_run_across_the_seam():
    # Batch: 40 days with close = 100 + day, written after the 40th day ended -> all closed.
    batch_closes = [100.0 + i for i in range(40)]
    batch = batch_view(daily_minutes(SYMBOL, days(0, 40), batch_closes), utc(2024, 2, 10, 1))
    # Speed: re-states the last batch day (must lose) and brings three new days with close = 500 + i.
    overlap = minute_rows(SYMBOL, utc(2024, 2, 9), 2, 999.0)
    fresh = daily_minutes(SYMBOL, days(40, 3), [500.0, 501.0, 502.0])
    speed = speed_candles(pl.concat([overlap, fresh]), batch_id=7, event_time=utc(2024, 2, 12, 0, 5))

    unified, seam = build(batch, speed)

    assert seam == D0 + timedelta(days=39)
    assert unified.schema == UNIFIED_SCHEMA
    assert unified.height == 43
    assert unified["source"].to_list() == [BATCH] * 40 + [SPEED] * 3
    assert unified.filter(pl.col("date") == seam)["close"].item() == 139.0  # batch wins over the speed re-statement
    assert unified["close"].to_list()[-3:] == [500.0, 501.0, 502.0]
    closes = unified["close"].to_list()
    last = unified.row(-1, named=True)
    assert abs(last["ma7"] - reference_ma(closes, 7)) < 1e-9
    assert abs(last["ma30"] - reference_ma(closes, 30)) < 1e-9
    assert last["as_of"] == utc(2024, 2, 12, 0, 5)
    assert unified.filter(pl.col("source") == BATCH)["as_of"].unique().to_list() == [utc(2024, 2, 10, 1)]

    for outcome in (
        checks.schema(unified),
        checks.one_row_per_day(unified),
        checks.batch_precedence(unified, batch, seam),
        checks.moving_averages_continuous(unified, batch, seam),
    ):
        assert outcome.passed, outcome


def test_a_day_the_batch_layer_wrote_while_it_was_running_is_topped_up_by_the_stream():
    # The batch layer ran at 00:03 on day 5: days 1-4 are closed, day 5 holds only three early minutes.
    batch_minutes = pl.concat(
        [
            daily_minutes(SYMBOL, days(0, 4), [10.0, 11.0, 12.0, 13.0]),
            minute_rows(SYMBOL, utc(2024, 1, 5), 3, 20.0, step=1.0),
        ]
    )
    written = utc(2024, 1, 5, 0, 3)
    batch = batch_view(batch_minutes, written)
    # The stream started at 00:02 and goes on to 00:05 (its minutes still open); the batch layer's closed
    # 00:02 beats the stream's partial one.
    speed = speed_candles(
        minute_rows(SYMBOL, utc(2024, 1, 5, 0, 2), 4, 30.0, step=1.0), 3, utc(2024, 1, 5, 0, 5, 30), closed=False
    )
    running_batch = batch_minutes.filter(pl.col("open_time") >= utc(2024, 1, 5)).with_columns(
        pl.lit(written, AS_OF).alias("as_of")
    )

    unified, seam = build(batch, speed, running_batch)

    assert seam == date(2024, 1, 4)
    today = unified.row(-1, named=True)
    assert today["date"] == date(2024, 1, 5) and today["source"] == SPEED
    assert today["open"] == 20.0  # the morning comes from the batch layer
    assert today["close"] == 33.0  # the latest minute from the stream
    assert today["minute_count"] == 6  # 00:00-00:01 from batch, 00:02-00:05 from the stream
    assert today["volume"] == 6.0
    assert today["as_of"] == utc(2024, 1, 5, 0, 5, 30)
    assert checks.batch_precedence(unified, batch, seam).passed


def test_days_between_the_seam_and_the_first_streamed_day_are_filled():
    batch = batch_view(daily_minutes(SYMBOL, days(0, 3), [1.0, 2.0, 3.0]), utc(2024, 1, 10))
    speed = speed_candles(daily_minutes(SYMBOL, days(6, 1), [7.0]), 1, utc(2024, 1, 7, 0, 3))

    unified, _ = build(batch, speed)

    assert unified["date"].to_list() == days(0, 7)
    assert unified["is_filled"].to_list() == [False] * 3 + [True] * 3 + [False]
    assert unified["source"].to_list() == [BATCH] * 3 + [SPEED] * 4
    gap = unified.filter(pl.col("is_filled"))
    assert gap["close"].unique().to_list() == [3.0] and gap["volume"].unique().to_list() == [0.0]
    assert gap["as_of"].unique().to_list() == [utc(2024, 1, 10)]  # as fresh as the close it carries
    assert checks.one_row_per_day(unified).passed


def test_without_a_batch_view_everything_comes_from_the_stream():
    batch = pl.DataFrame(schema={**FILLED_SCHEMA, "as_of": AS_OF})
    speed = speed_candles(daily_minutes(SYMBOL, days(0, 2), [5.0, 6.0]), 1, utc(2024, 1, 2, 0, 3))
    unified, seam = build(batch, speed)
    assert seam is None
    assert unified["source"].to_list() == [SPEED, SPEED]
    assert checks.batch_precedence(unified, batch, seam).passed


def test_the_latest_micro_batch_wins_per_minute():
    t = utc(2024, 1, 1)
    first = speed_candles(minute_rows(SYMBOL, t, 2, 10.0), 1, t)
    second = speed_candles(minute_rows(SYMBOL, t + timedelta(minutes=1), 1, 99.0), 2, t + timedelta(minutes=1))
    latest = latest_per_key(pl.concat([second, first]).lazy(), ["symbol", "open_time"]).collect()
    assert latest.sort("open_time")["close"].to_list() == [10.0, 99.0]


def test_checks_fail_on_a_broken_view():
    batch = batch_view(daily_minutes(SYMBOL, days(0, 35), [100.0 + i for i in range(35)]), utc(2024, 3, 1))
    speed = speed_candles(daily_minutes(SYMBOL, days(35, 2), [1.0, 2.0]), 1, utc(2024, 2, 7))
    unified, seam = build(batch, speed)

    tampered = unified.with_columns(
        pl.when(pl.col("date") == days(10, 1)[0]).then(pl.col("close") + 1).otherwise(pl.col("close")).alias("close")
    )
    assert not checks.batch_precedence(tampered, batch, seam).passed
    assert not checks.moving_averages_continuous(tampered, batch, seam).passed

    relabelled = unified.with_columns(
        pl.when(pl.col("date") == seam).then(pl.lit(SPEED)).otherwise("source").alias("source")
    )
    assert not checks.batch_precedence(relabelled, batch, seam).passed

    wrong_ma = unified.with_columns(
        pl.when(pl.col("source") == SPEED).then(pl.col("ma7") * 2).otherwise("ma7").alias("ma7")
    )
    assert not checks.moving_averages_continuous(wrong_ma, batch, seam).passed

    repeated = pl.concat([unified, unified.tail(1)])
    assert not checks.one_row_per_day(repeated).passed
    assert not checks.schema(unified.drop("as_of")).passed
