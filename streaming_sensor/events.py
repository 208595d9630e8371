"""Binance stream messages (as published to Kafka) parsed into one flat event table, in Spark.

Each Kafka value is the ``data`` object of a Binance combined-stream message: a kline update
(``{"e":"kline","E":…,"s":"BTCUSDT","k":{"t":…,"o":"…","h":…,"x":false,…}}``) or a trade
(``{"e":"trade","E":…,"s":…,"p":"…","q":"…","T":…}``). Both become rows of :data:`EVENT_COLUMNS`; a value
that is not such a message keeps its Kafka coordinates and gets a ``reason`` instead of being dropped silently.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, LongType, StringType, StructField, StructType

from crypto_assets.schema import PRICES

KLINE = "kline"
TRADE = "trade"

# Only the fields the stream uses; Binance sends prices and quantities as strings.
MESSAGE_SCHEMA = StructType(
    [
        StructField("e", StringType()),
        StructField("E", LongType()),
        StructField("s", StringType()),
        StructField("p", StringType()),
        StructField("q", StringType()),
        StructField("T", LongType()),
        StructField(
            "k",
            StructType(
                [
                    StructField("t", LongType()),
                    StructField("o", StringType()),
                    StructField("h", StringType()),
                    StructField("l", StringType()),
                    StructField("c", StringType()),
                    StructField("v", StringType()),
                    StructField("x", BooleanType()),
                ]
            ),
        ),
    ]
)

EVENT_COLUMNS = [
    "kind",
    "symbol",
    "minute_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "is_closed",
    "event_ms",
    "topic",
    "partition",
    "offset",
]
RAW_CHARS = 500


def _number(text: Column) -> Column:
    return text.try_cast("double")


def _problem(condition: Column, text: str) -> Column:
    return F.when(condition, F.lit(text))


def parse_events(raw: DataFrame) -> DataFrame:
    """Kafka rows (Spark's Kafka column layout) -> event rows plus ``reason`` (null for a good row).

    Kline rows carry the exchange's running candle; trade rows carry price in open..close and quantity in
    volume. ``minute_ms`` is the candle's open time (a trade's time cut to its minute), ``event_ms`` the newest
    exchange time the row stands for (kline ``E``, trade ``T``).
    """
    m = F.from_json(F.col("value").cast("string"), MESSAGE_SCHEMA, {"mode": "PERMISSIVE"}).alias("m")
    parsed = raw.select("topic", "partition", "offset", "value", m)
    kind = F.col("m.e")
    is_kline = kind == KLINE
    price = _number(F.col("m.p"))
    events = parsed.select(
        kind.alias("kind"),
        F.col("m.s").alias("symbol"),
        F.when(is_kline, F.col("m.k.t")).otherwise(F.col("m.T") - F.col("m.T") % 60_000).alias("minute_ms"),
        F.when(is_kline, _number(F.col("m.k.o"))).otherwise(price).alias("open"),
        F.when(is_kline, _number(F.col("m.k.h"))).otherwise(price).alias("high"),
        F.when(is_kline, _number(F.col("m.k.l"))).otherwise(price).alias("low"),
        F.when(is_kline, _number(F.col("m.k.c"))).otherwise(price).alias("close"),
        F.when(is_kline, _number(F.col("m.k.v"))).otherwise(_number(F.col("m.q"))).alias("volume"),
        F.when(is_kline, F.coalesce(F.col("m.k.x"), F.lit(False))).otherwise(F.lit(False)).alias("is_closed"),
        F.when(is_kline, F.col("m.E")).otherwise(F.col("m.T")).alias("event_ms"),
        "topic",
        "partition",
        "offset",
        "value",
    )
    problems = [
        _problem(F.col("kind").isNull(), "value: not a JSON stream message"),
        _problem(F.col("kind").isNotNull() & ~F.col("kind").isin(KLINE, TRADE), "e: not a kline or trade event"),
        _problem(F.col("symbol").isNull() | ~F.col("symbol").rlike("^[A-Z0-9]{2,20}$"), "s: missing or invalid symbol"),
        _problem(F.col("minute_ms").isNull(), "time: missing"),
        _problem(F.col("event_ms").isNull(), "event time: missing"),
    ]
    for name in PRICES:
        problems.append(
            _problem(
                F.col(name).isNull() | F.isnan(name) | (F.col(name) <= 0), f"{name}: missing or not a positive number"
            )
        )
    problems += [
        _problem(F.col("volume").isNull() | F.isnan("volume") | (F.col("volume") < 0), "volume: missing or negative"),
        _problem(F.col("high") < F.col("low"), "high < low"),
    ]
    reason = F.concat_ws("; ", *problems)
    reason = F.when(reason != "", reason)
    # The payload travels on only for a bad row (cut short), so good rows stay small in the shuffle.
    raw_text = F.when(reason.isNotNull(), F.substring(F.col("value").cast("string"), 1, RAW_CHARS))
    return events.select(*EVENT_COLUMNS, reason.alias("reason"), raw_text.alias("raw"))
