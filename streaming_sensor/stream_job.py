"""The Spark Structured Streaming job: Kafka -> events -> running candles and daily OHLCV per symbol ->
one set of speed-layer files and one log line per micro-batch.

Exactly-once output: the Kafka offsets of every micro-batch and the candle state are in Spark's checkpoint,
so after a crash Spark re-runs the unfinished batch id over the same offsets and state and the writer
rewrites the same files; the log keeps one line per batch id.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from crypto_assets.settings import Settings
from streaming_sensor.batch_writer import (
    BAD,
    CANDLE,
    DAILY_ROW,
    LATE,
    OUTPUT_DDL,
    BatchWriter,
)
from streaming_sensor.broker import topic_names
from streaming_sensor.candles import STATE_DDL, CandleBook, event_order, parse_delay
from streaming_sensor.events import parse_events
from streaming_sensor.kafka_source import SOURCE_NAME, KafkaSource

log = logging.getLogger(__name__)

QUERY_NAME = "speed_candles"
OUTPUT_COLUMNS = [c.strip().split(" ")[0] for c in OUTPUT_DDL.split(",")]


def checkpoint_dir(settings: Settings) -> Path:
    return settings.speed_dir / "checkpoints" / QUERY_NAME


def build_session(settings: Settings, app_name: str = "crypto-assets-stream") -> SparkSession:
    # Python workers (the Kafka source, the candle state) run in this interpreter, with this environment.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark.master)
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.caseSensitive", "true")  # Binance payloads have both "e" and "E", "t" and "T"
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
    )
    if settings.spark.kafka_jars:
        builder = builder.config("spark.jars", settings.spark.kafka_jars)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_kafka(spark: SparkSession, settings: Settings, max_offsets_per_trigger: int = 0) -> DataFrame:
    """Spark's ``kafka`` source when its jars are configured, else the project's Python source; same rows."""
    fmt = "kafka" if settings.spark.kafka_jars else SOURCE_NAME
    if fmt == SOURCE_NAME:
        spark.dataSource.register(KafkaSource)
    reader = (
        spark.readStream.format(fmt)
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", ",".join(topic_names(settings.kafka)))
        .option("startingOffsets", "earliest")
    )
    if fmt == "kafka":
        reader = reader.option("failOnDataLoss", "false")
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def _output(frames: list[pl.DataFrame]) -> pd.DataFrame:
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    for name in OUTPUT_COLUMNS:
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None).alias(name))
    return frame.select(OUTPUT_COLUMNS).to_pandas()


def fold_symbol(symbol: str | None, events: pd.DataFrame, state: str | None, delay_ms: int) -> tuple[pd.DataFrame, str | None]:
    """One symbol's events of one micro-batch folded into its candle book: (output rows, new state)."""
    out: list[pl.DataFrame] = []
    bad = events[events["reason"].notna()]
    if len(bad):
        reasons = bad["reason"] + " | value: " + bad["raw"].fillna("")
        out.append(
            pl.DataFrame(
                {
                    "kind": BAD,
                    "symbol": symbol,
                    "topic": bad["topic"].tolist(),
                    "partition": bad["partition"].astype("int64").tolist(),
                    "offset": bad["offset"].astype("int64").tolist(),
                    "reason": reasons.tolist(),
                },
                schema_overrides={"symbol": pl.String},
            )
        )
    good = events[events["reason"].isna()]
    if symbol is None or not len(good):
        return _output(out), state
    book = CandleBook.from_state(symbol, state)
    rows = sorted(
        zip(
            good["kind"], good["minute_ms"].astype("int64"), good["open"], good["high"], good["low"],
            good["close"], good["volume"], good["is_closed"], good["event_ms"].astype("int64"),
            good["topic"], good["partition"], good["offset"], strict=True,
        ),
        key=lambda r: event_order(r[0], r[8], r[9], r[10], r[11]),
    )  # fmt: skip
    touched, late = book.apply((r[:9] for r in rows), delay_ms)
    if touched:
        candles = book.candles(touched)
        out.append(
            candles.select(
                pl.lit(CANDLE).alias("kind"), "symbol", "open_time", "open", "high", "low", "close", "volume",
                "is_closed", pl.from_epoch("event_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("event_time"),
            )
        )
        daily = book.daily(touched)
        out.append(
            daily.select(
                pl.lit(DAILY_ROW).alias("kind"), "symbol", "date", "open", "high", "low", "close", "volume",
                pl.col("minute_count").cast(pl.Int32),
                pl.from_epoch("event_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("event_time"),
            )
        )
    if late:
        out.append(pl.DataFrame({"kind": [LATE], "symbol": [symbol], "dropped": [late]}))
    book.evict(delay_ms)
    return _output(out), book.to_state()


def make_state_function(delay_ms: int):
    def update(key: tuple, frames: Iterator[pd.DataFrame], state) -> Iterator[pd.DataFrame]:
        events = pd.concat(list(frames), ignore_index=True)
        previous = state.get[0] if state.exists else None
        rows, new_state = fold_symbol(key[0], events, previous, delay_ms)
        if new_state is not None and key[0] is not None:
            state.update((new_state,))
        yield rows

    return update


def speed_rows(raw: DataFrame, watermark: str) -> DataFrame:
    """Kafka rows -> the stateful step's output rows (see :data:`OUTPUT_DDL`), keyed by symbol."""
    delay_ms = parse_delay(watermark)
    return (
        parse_events(raw)
        .groupBy("symbol")
        .applyInPandasWithState(
            make_state_function(delay_ms), OUTPUT_DDL, STATE_DDL, "Update", GroupStateTimeout.NoTimeout
        )
    )


def _read_offset_log(checkpoint: Path, batch_id: int) -> dict | None:
    path = checkpoint / "offsets" / str(batch_id)
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    # "v1", the batch metadata, then one line per source: the only source's offsets are the last line.
    return json.loads(lines[-1]) if len(lines) >= 3 else None


def batch_offsets(checkpoint: Path, batch_id: int) -> dict[str, dict[str, list[int]]]:
    """``topic -> partition -> [start, end)`` of one micro-batch, from Spark's offset log."""
    end = _read_offset_log(checkpoint, batch_id) or {}
    start = (_read_offset_log(checkpoint, batch_id - 1) or {}) if batch_id > 0 else {}
    return {
        topic: {part: [int(start.get(topic, {}).get(part, 0)), int(stop)] for part, stop in sorted(parts.items(), key=lambda p: int(p[0]))}
        for topic, parts in sorted(end.items())
    }


def start_stream(spark: SparkSession, settings: Settings, max_offsets_per_trigger: int = 0) -> StreamingQuery:
    checkpoint = checkpoint_dir(settings)
    checkpoint.mkdir(parents=True, exist_ok=True)
    writer = BatchWriter(settings.lake_dir, settings.speed_dir)

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        rows = pl.from_arrow(batch.toArrow())
        record = writer.write(rows, batch_id, batch_offsets(checkpoint, batch_id))
        if record is not None:
            log.info(
                "batch %d: %d candle rows, %d daily rows, event time %s .. %s",
                batch_id, record.rows["candles_1m"], record.rows["daily"], record.min_event_time, record.max_event_time,
            )  # fmt: skip

    rows = speed_rows(read_kafka(spark, settings, max_offsets_per_trigger), settings.stream.watermark)
    return (
        rows.writeStream.queryName(QUERY_NAME)
        .outputMode("update")
        .foreachBatch(write_batch)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{settings.stream.trigger_seconds} seconds")
        .start()
    )
