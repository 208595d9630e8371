"""The batch transforms over Spark DataFrames, step for step the Polars ones in ``batch/transforms``.

Each function here mirrors its Polars namesake (:mod:`~crypto_assets.batch.transforms.daily`,
:mod:`~crypto_assets.batch.transforms.filled`, :mod:`~crypto_assets.batch.transforms.prophet`) and uses the same
constants, so both engines give the same rows, bit for bit: volumes are summed exactly and moving averages
take the same float steps in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from crypto_assets.batch.transforms.daily import EXACT_VOLUME_LIMIT, FRACTION, FRACTION_BITS, VOLUME_PARTS
from crypto_assets.schema import DAILY_SCHEMA, FILLED_SCHEMA, MA_WINDOWS, PRICES

MICROS_PER_DAY = 86_400_000_000


def sorted_rows(frame: DataFrame, *keys: str) -> DataFrame:
    """Rows in key order. Outputs are daily-sized: one sorted partition spares a range sort's sampling job."""
    return frame.coalesce(1).sortWithinPartitions(*keys)


def utc_date(timestamp: Column) -> Column:
    """The UTC day of a timestamp, whatever the session's time zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(timestamp) / F.lit(MICROS_PER_DAY)).cast("int"))


def split_volume(volume: Column) -> list[Column]:
    """Whole part and two 40-bit fraction digits of a volume, as longs (as the Polars ``split_volume``)."""
    whole = F.floor(volume).cast("double")
    first = (volume - whole) * F.lit(float(FRACTION))
    first_digit = F.floor(first).cast("double")
    second_digit = F.floor((first - first_digit) * F.lit(float(FRACTION))).cast("double")
    exact = F.abs(volume) < F.lit(EXACT_VOLUME_LIMIT)
    # Outside the exact range the parts are unused (the day falls back to a plain sum); null keeps them harmless.
    return [
        F.when(exact, part.cast("long")).alias(name)
        for part, name in zip((whole, first_digit, second_digit), VOLUME_PARTS, strict=True)
    ]


def join_volume(whole: Column, first: Column, second: Column) -> Column:
    """The summed parts as one float: carries in integers, then the same float steps as the Polars one."""
    first = first + F.shiftright(second, FRACTION_BITS)
    second = second - F.shiftleft(F.shiftright(second, FRACTION_BITS), FRACTION_BITS)
    whole = whole + F.shiftright(first, FRACTION_BITS)
    first = first - F.shiftleft(F.shiftright(first, FRACTION_BITS), FRACTION_BITS)
    fraction = first.cast("double") * F.lit(2.0**-FRACTION_BITS) + second.cast("double") * F.lit(
        2.0 ** (-2 * FRACTION_BITS)
    )
    return whole.cast("double") + fraction


def aggregate_daily(minutes: DataFrame) -> DataFrame:
    """Open of the first minute, max high, min low, close of the last minute, exactly summed volume."""
    daily = (
        minutes.select("*", *split_volume(F.col("volume")))
        .groupBy("symbol", utc_date(F.col("open_time")).alias("date"))
        .agg(
            F.min_by("open", "open_time").alias("open"),
            F.max("high").alias("high"),
            F.min("low").alias("low"),
            F.max_by("close", "open_time").alias("close"),
            *[F.sum(name).alias(name) for name in VOLUME_PARTS],
            F.bool_and(F.abs("volume") < F.lit(EXACT_VOLUME_LIMIT)).alias("_volume_exact"),
            F.sum("volume").alias("_volume_sum"),
            F.count(F.lit(1)).alias("minute_count"),
        )
    )
    exact = join_volume(*(F.col(name) for name in VOLUME_PARTS))
    volume = F.when(F.col("_volume_exact"), exact).otherwise(F.col("_volume_sum"))
    return sorted_rows(daily.withColumn("volume", volume).select(DAILY_SCHEMA.names()), "symbol", "date")


def fill_calendar(daily: DataFrame, through: Mapping[str, date] | None = None) -> DataFrame:
    """Every day from a symbol's first candle to its last (or its ``through`` day), missing days flagged.

    With ``through``, only its symbols are built. A missing day carries the previous close as open, high, low
    and close, with zero volume.
    """
    bounds = daily.groupBy("symbol").agg(F.min("date").alias("first"), F.max("date").alias("last"))
    if through is not None:
        ends = daily.sparkSession.createDataFrame(list(through.items()), "symbol string, through date")
        bounds = bounds.join(ends, "symbol").select("symbol", "first", F.col("through").alias("last"))
    days = F.explode(F.sequence("first", "last", F.expr("INTERVAL 1 DAY"))).alias("date")
    calendar = bounds.where(F.col("first") <= F.col("last")).select("symbol", days)
    joined = calendar.join(daily, ["symbol", "date"], "left")
    history = Window.partitionBy("symbol").orderBy("date").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    carried = F.last("close", ignorenulls=True).over(history)
    return joined.select(
        "symbol",
        "date",
        *[F.coalesce(F.col(c), carried).alias(c) for c in PRICES],
        F.coalesce("volume", F.lit(0.0)).alias("volume"),
        F.coalesce("minute_count", F.lit(0)).alias("minute_count"),
        F.col("close").isNull().alias("is_filled"),
    )


def window_mean(values: str, size: int, order: WindowSpec) -> Column:
    """The Polars ``window_mean``: the last ``size`` values added oldest first, times 1/size; null before.

    The fold starts from 0.0, and 0.0 + x is x for every price, so the float steps are the same.
    """
    window = F.collect_list(values).over(order.rowsBetween(-(size - 1), Window.currentRow))
    total = F.aggregate(window, F.lit(0.0), lambda total, value: total + value)
    return F.when(F.size(window) == size, total * F.lit(1.0 / size))


def add_moving_averages(filled: DataFrame) -> DataFrame:
    order = Window.partitionBy("symbol").orderBy("date")
    return filled.select("*", *[window_mean("close", size, order).alias(name) for name, size in MA_WINDOWS.items()])


def daily_filled(daily: DataFrame, through: Mapping[str, date] | None = None) -> DataFrame:
    filled = add_moving_averages(fill_calendar(daily, through)).select(FILLED_SCHEMA.names())
    return sorted_rows(filled, "symbol", "date")


def prophet_input(filled: DataFrame) -> DataFrame:
    return sorted_rows(filled, "symbol", "date").select(F.col("date").alias("ds"), F.col("close").alias("y"), "symbol")
