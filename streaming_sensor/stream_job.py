"""The Spark Structured Streaming job: Kafka -> parsed events -> running candles and daily OHLCV per symbol ->
one set of speed-layer files and one log line per micro-batch.

Spark reads Kafka (its own ``kafka`` source, or the project's Python source) and parses the Binance JSON; each
micro-batch's events are folded into per-symbol candle books on the driver (:mod:`streaming_sensor.folding`),
which needs no shuffle and keeps a batch's latency low.

Exactly-once output: the Kafka offsets of every micro-batch are in Spark's checkpoint and the candle state of
every batch is snapshotted inside it, so after a crash Spark re-runs the unfinished batch id over the same
offsets from the same state and the writer rewrites the same files; the log keeps one line per batch id.

The checkpoint is bound to the micro-batch log by ``<checkpoint>/speed_log.json``: the log id of its batch 0.
A new checkpoint next to a log that already has batches (the checkpoint was deleted to reset the stream)
starts its log ids after the newest logged one, so its batches never overwrite or hide the files of logged
ones, and readers (who keep the newest row per candle) see the new run's rows win. Its Kafka offsets start
again from the earliest, so it re-sends candles the log already has. A log that is ahead of its checkpoint
(another checkpoint wrote it) stops the job at start-up with an explanation instead of mixing the two.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import polars as pl
from py4j.protocol import Py4JError
from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from crypto_assets.lake.atomic import write_text_atomic
from crypto_assets.lake.microbatch_log import read_records_tail
from crypto_assets.lake.missed import MissedLog
from crypto_assets.settings import Settings, parse_delay
from streaming_sensor.batch_writer import BatchWriter, LogMismatch
from streaming_sensor.broker import topic_names
from streaming_sensor.checkpoint import QUERY_NAME, batch_ids, checkpoint_path, read_offset_log
from streaming_sensor.events import parse_events
from streaming_sensor.folding import CandleFolder, state_dir
from streaming_sensor.kafka_source import RESET_FROM, SOURCE_NAME, KafkaSource, positions, range_starts
from streaming_sensor.trim import rotation_note_path

log = logging.getLogger(__name__)

LOG_BINDING = "speed_log.json"
STOP_GRACE_SECONDS = 15.0  # for the running micro-batch on a stop; under the 20 s `up` allows each component
JVM_EXIT_SECONDS = 30


def checkpoint_dir(settings: Settings) -> Path:
    return checkpoint_path(settings.speed_dir)


def spark_conf(settings: Settings, app_name: str) -> SparkConf:
    conf = (
        SparkConf()
        .setAppName(app_name)
        .setMaster(settings.spark.master)
        .set("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        # Without it the JVM may take a quarter of the machine's memory and keeps growing towards it for days.
        .set("spark.driver.memory", settings.stream.driver_memory)
        .set("spark.sql.session.timeZone", "UTC")
        .set("spark.sql.caseSensitive", "true")  # Binance payloads have both "e" and "E", "t" and "T"
        # Spark's checkpoint keeps the offset and commit files of this many batches and deletes older ones.
        .set("spark.sql.streaming.minBatchesToRetain", str(settings.stream.checkpoint_batches))
        .set("spark.ui.enabled", "false")
        .set("spark.ui.showConsoleProgress", "false")  # spark-submit shows progress bars to "pyspark-shell"
        .set("spark.sql.execution.arrow.pyspark.enabled", "true")
        .set("spark.driver.bindAddress", "127.0.0.1")
        .set("spark.driver.host", "127.0.0.1")
    )
    return conf.set("spark.jars", settings.spark.kafka_jars) if settings.spark.kafka_jars else conf


def build_session(settings: Settings, app_name: str = "crypto-assets-stream") -> tuple[SparkSession, subprocess.Popen]:
    """A local Spark session and its JVM's process, which runs in a session of its own.

    A stop signal to the job's process group (Ctrl-C, ``crypto-assets down``) then reaches this driver only,
    which stops the query between micro-batches and then Spark (:func:`stop_stream`). Were the JVM in the
    group, its shutdown hook would stop Spark under the running query, and its Python worker daemon would
    hang up the whole group. The JVM still ends with this process: it exits when its stdin (a pipe from
    here) closes.
    """
    # Python workers (the Kafka source, the candle state) run in this interpreter, with this environment.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    conf = spark_conf(settings, app_name)
    gateway = launch_gateway(conf, popen_kwargs={"start_new_session": True})
    SparkContext(conf=conf, gateway=gateway)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, gateway.proc


def _spark_already_stopped(exc: Py4JError) -> bool:
    return "stopped SparkContext" in str(exc)


def _abandoned_by_stop(error: BaseException) -> bool:
    text = str(error)
    return StopRequested.__name__ in text or "cancelled" in text


class StopRequested(RuntimeError):
    """A micro-batch began after the job decided to stop: it writes nothing and is not committed."""


PY4J_CALLBACK_LOGGER = "py4j.clientserver"


def _not_a_stop(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], StopRequested))


def quiet_abandoned_batches() -> None:
    """py4j logs every exception a foreachBatch call raises, with its traceback; a batch the stop abandoned is
    not a failure (:func:`stop_stream` reports how the query ended), so its record is dropped."""
    logging.getLogger(PY4J_CALLBACK_LOGGER).addFilter(_not_a_stop)


class StopGate:
    """Puts a stop between micro-batches: :meth:`close` waits for the running batch's writes to end, and a
    batch that begins afterwards stops before writing anything (Spark runs it again at the next start)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self.closed = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._cond:
            if self.closed:
                raise StopRequested("the stream job is stopping; this micro-batch runs again at the next start")
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the running batch; True when none is running any more."""
        with self._cond:
            idle = self._cond.wait_for(lambda: not self._busy, timeout)
            self.closed = True
            return idle


def stop_stream(
    spark: SparkSession,
    jvm: subprocess.Popen,
    query: StreamingQuery | None,
    gate: StopGate | None = None,
    grace: float = STOP_GRACE_SECONDS,
) -> BaseException | None:
    """Stop the query between micro-batches, then Spark and its JVM; returns the query's failure, if any.

    The running micro-batch gets ``grace`` seconds to finish writing; one still running then is interrupted
    and, not being committed, runs again from the checkpoint at the next start (the writer rewrites the same
    files), as does one that began while the job stopped. A Spark context someone else already stopped
    counts as stopped: nothing is left to do.
    """
    error = None
    try:
        if query is not None:
            stopping = query.isActive  # else it ended on its own, and its failure is a real one
            if stopping:
                # How the query ended is reported below. Spark would log a micro-batch the stop abandoned (it
                # raises StopRequested) as a failed query with a stack trace; a real failure is still returned.
                spark.sparkContext.setLogLevel("OFF")
            if gate is not None and not gate.close(grace):
                log.warning(
                    "the running micro-batch did not finish within %gs of the stop; it runs again at the next start",
                    grace,
                )
            if query.isActive:
                query.stop()
            error = query.exception()
            if error is not None and stopping and _abandoned_by_stop(error):
                log.info("a micro-batch that began as the job stopped was abandoned; it runs again at the next start")
                error = None
    except Py4JError as exc:
        if not _spark_already_stopped(exc):
            raise
        log.info("Spark had already stopped")
    finally:
        spark.stop()
        if jvm.stdin is not None:
            jvm.stdin.close()  # the gateway exits at the end of its stdin
        try:
            jvm.wait(JVM_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning(
                "Spark's JVM (pid %d) did not exit within %ds of the stop; killing it", jvm.pid, JVM_EXIT_SECONDS
            )
            jvm.kill()
            jvm.wait()
    return error


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
    else:
        reader = reader.option("rotationNote", str(rotation_note_path(settings.speed_dir)))
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def batch_offsets(checkpoint: Path, batch_id: int) -> dict[str, dict[str, list[int]]]:
    """``topic -> partition -> [start, end)`` of one micro-batch, from Spark's offset log."""
    end = read_offset_log(checkpoint, batch_id) or {}
    start = (read_offset_log(checkpoint, batch_id - 1) or {}) if batch_id > 0 else {}
    starts, ends = range_starts(start, end), positions(end)
    return {
        topic: {
            part: [int(starts.get(topic, {}).get(part, 0)), int(stop)]
            for part, stop in sorted(parts.items(), key=lambda p: int(p[0]))
        }
        for topic, parts in sorted(ends.items())
    }


def batch_reset(checkpoint: Path, batch_id: int) -> dict[str, dict[str, int]]:
    """The partitions a batch reads from a reset point because Kafka lost data before it (empty: none)."""
    return (read_offset_log(checkpoint, batch_id) or {}).get(RESET_FROM) or {}


def bind_log(checkpoint: Path, lake: Path) -> int:
    """The log id of this checkpoint's batch 0 (see the module doc); binds a new checkpoint to the log."""
    binding = checkpoint / LOG_BINDING
    planned = batch_ids(checkpoint, "offsets")
    tail = read_records_tail(lake)
    newest_logged = tail[-1].batch_id if tail else None
    if binding.is_file():
        base = int(json.loads(binding.read_text())["first_log_id"])
    else:
        base = newest_logged + 1 if newest_logged is not None and not planned else 0
        if base:
            log.warning(
                "new checkpoint %s next to a micro-batch log that already holds batches up to %d: this checkpoint's "
                "batches are logged from %d on, and it reads Kafka again from the earliest offsets",
                checkpoint,
                newest_logged,
                base,
            )
        write_text_atomic(json.dumps({"first_log_id": base}) + "\n", binding)
    highest = base + planned[-1] if planned else base - 1
    if newest_logged is not None and newest_logged > highest:
        raise LogMismatch(
            f"the micro-batch log under {lake} holds batch {newest_logged}, beyond anything checkpoint {checkpoint} "
            f"planned (its batches are logged as {base}..{highest}): the log was written by another checkpoint. "
            "Point this job at a new lake, or remove both the log and the checkpoint to start over."
        )
    return base


def start_stream(
    spark: SparkSession, settings: Settings, max_offsets_per_trigger: int = 0, gate: StopGate | None = None
) -> StreamingQuery:
    settings.require_local_lake("the stream job")
    checkpoint = checkpoint_dir(settings)
    checkpoint.mkdir(parents=True, exist_ok=True)
    base = bind_log(checkpoint, settings.lake_dir)
    writer = BatchWriter(settings.lake_dir, settings.speed_dir)
    folder = CandleFolder(state_dir(checkpoint), parse_delay(settings.stream.watermark))
    planned, committed = batch_ids(checkpoint, "offsets"), batch_ids(checkpoint, "commits")
    folder.reconcile(planned[-1] if planned else None, committed[-1] if committed else None)
    missed = MissedLog(settings.speed_dir)
    quiet_abandoned_batches()

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        with gate.batch() if gate is not None else nullcontext():
            _write_batch(batch, batch_id)

    def _write_batch(batch: DataFrame, batch_id: int) -> None:
        log_id = base + batch_id
        started = time.perf_counter()
        events = pl.from_arrow(batch.toArrow())  # runs the batch's Spark job: Kafka read and JSON parsing
        collected = time.perf_counter()
        reset = batch_reset(checkpoint, batch_id)
        if reset:
            log.error(
                "batch %d reads %s from the offsets given after Kafka lost data: each symbol's missed stretch "
                "runs from its newest event before the loss to its first newer event after it",
                log_id,
                reset,
            )
        rows, closed = folder.fold(batch_id, events, f"kafka-reset-b{log_id}" if reset else None)
        folded = time.perf_counter()
        record = writer.write(rows, log_id, batch_offsets(checkpoint, batch_id))
        for gap in closed:
            stretch = missed.record(gap.symbol, gap.from_ms, gap.to_ms, gap.reason, stretch_id=gap.id)
            log.warning(
                "recorded missed stretch for %s: %s .. %s (%s)",
                gap.symbol,
                stretch.from_time,
                stretch.to_time,
                gap.reason,
            )
        folder.commit(batch_id)
        log.info(
            "batch %d: %d events -> %d candle rows, %d daily rows, event time %s .. %s "
            "(spark read+parse %.3fs, fold %.3fs, write+log+snapshot %.3fs)",
            log_id,
            events.height,
            record.rows["candles_1m"],
            record.rows["daily"],
            record.min_event_time,
            record.max_event_time,
            collected - started,
            folded - collected,
            time.perf_counter() - folded,
        )

    events = parse_events(read_kafka(spark, settings, max_offsets_per_trigger))
    return (
        events.writeStream.queryName(QUERY_NAME)
        .outputMode("append")
        .foreachBatch(write_batch)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{settings.stream.trigger_seconds} seconds")
        .start()
    )
