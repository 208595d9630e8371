"""A Spark streaming source that reads Kafka topics through confluent-kafka, for clusters without Spark's
Kafka connector jars.

Rows have the same columns as Spark's own ``kafka`` source (key, value, topic, partition, offset, timestamp,
timestampType), so everything downstream is identical whichever source runs. Offsets are the Kafka offsets
themselves, ``{"<topic>": {"<partition>": <next offset>}}`` like the native source's JSON, so a micro-batch is
an exact offset range per partition: a batch replayed after a crash reads exactly the same messages.

Two keys that cannot be topic names (they start with ``@``) ride along in an offsets object:

* ``"@topic_ids": {"<topic>": "<id>"}``: the broker's id of each topic. A topic whose id changed was deleted
  and re-created, e.g. by a restart of a memory-only broker (Tansu here) whose offsets start again at 0.
* ``"@reset_from": {"<topic>": {"<partition>": <offset>}}``: only in the end offsets of the first batch after
  data loss; that batch reads those partitions from there instead of from the previous batch's end.
* ``"@rotated": {"<topic>": {"<partition>": <offset>}}``: the same for the first batch after the producer
  rotated a topic it had read to the end (:mod:`streaming_sensor.trim`): nothing was lost.

Data loss is detected when a topic's id changed, when a partition's (fetch-confirmed) end offset is below the
checkpointed start, or when its earliest offset is above it (retention deleted unread messages). The source
logs it as an error and goes on from the partition's earliest offset, like Spark's ``failOnDataLoss=false``;
the stream job records the stretch of exchange time it did not see (:mod:`streaming_sensor.stream_job`).
While the broker is unreachable or a topic is missing, no new batch is planned and the query keeps running.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from streaming_sensor.broker import confirm_ends, topic_ids
from streaming_sensor.trim import read_note, rotated_ends, rotation_pending

SOURCE_NAME = "kafka_py"
KAFKA_COLUMNS = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int"
)
READ_TIMEOUT_SECONDS = 60.0
STALL_CHECK_SECONDS = 3.0  # a read that makes no progress this long checks whether its topic was re-created
CONSUME_BATCH = 10_000
TOPIC_IDS = "@topic_ids"
RESET_FROM = "@reset_from"
ROTATED = "@rotated"
WARN_EVERY_SECONDS = 60.0

Offsets = dict[str, dict[str, int]]

log = logging.getLogger(__name__)


def _worker_logging() -> None:
    """Spark runs the reader in Python worker processes with no logging set up: send this module's records to
    stderr (which ends up in the stream job's output) with a timestamp and level, like the driver's."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def is_meta(key: str) -> bool:
    return key.startswith("@")


def positions(offsets: dict | None) -> Offsets:
    """The ``topic -> partition -> offset`` part of an offsets object (the ``@`` keys left out)."""
    return {t: {p: int(o) for p, o in parts.items()} for t, parts in (offsets or {}).items() if not is_meta(t)}


def range_starts(start: dict | None, end: dict) -> Offsets:
    """Where each partition's range of the batch ``(start, end]`` begins: the previous end, or the reset point."""
    starts = positions(start)
    for key in (RESET_FROM, ROTATED):
        for topic, parts in (end.get(key) or {}).items():
            for part, offset in parts.items():
                starts.setdefault(topic, {})[part] = int(offset)
    return starts


def canonical(
    ends: Offsets,
    topic_ids: dict[str, str] | None = None,
    reset_from: Offsets | None = None,
    rotated: Offsets | None = None,
) -> dict:
    """An offsets object in one fixed key order, so equal offsets always serialize to the same JSON (Spark
    compares them as text to decide whether there is new data)."""
    out: dict = {t: {p: int(ends[t][p]) for p in sorted(ends[t], key=int)} for t in sorted(ends)}
    if topic_ids:
        out[TOPIC_IDS] = {t: topic_ids[t] for t in sorted(topic_ids)}
    for key, starts in ((RESET_FROM, reset_from), (ROTATED, rotated)):
        if starts:
            out[key] = {
                t: {p: int(starts[t][p]) for p in sorted(starts[t], key=int)} for t in sorted(starts) if starts[t]
            }
    return out


class BrokerUnavailable(RuntimeError):
    """The broker did not answer, or a subscribed topic does not exist (yet)."""


@dataclass(frozen=True)
class OffsetRange(InputPartition):
    topic: str
    partition: int
    start: int
    end: int  # exclusive
    bootstrap: str
    topic_id: str | None = None  # the topic's id when the range was planned; None when the broker has none


def split_limit(start: Offsets, latest: Offsets, max_rows: int) -> Offsets:
    """End offsets that advance about ``max_rows`` messages in total, shared in proportion to each partition's
    backlog, as Spark's own Kafka source does (``maxOffsetsPerTrigger``); a partition with a backlog moves at
    least one message, so none is starved.

    Proportional shares keep the topics together in exchange time: the kline and trade topics carry the same
    stretch of time at very different message rates, so equal shares would run one topic minutes ahead of the
    other and the stream job would drop the other's events as older than the watermark.
    """
    ends = {t: dict(parts) for t, parts in latest.items()}
    sizes = {(t, p): e - start.get(t, {}).get(p, 0) for t, parts in latest.items() for p, e in parts.items()}
    total = sum(size for size in sizes.values() if size > 0)
    if max_rows <= 0 or total <= max_rows:
        return ends
    for (t, p), size in sizes.items():
        if size > 0:
            share = max_rows * size / total
            ends[t][p] = start.get(t, {}).get(p, 0) + min(size, max(1, int(share)))
    return ends


def offset_ranges(start: dict | None, end: dict, bootstrap: str) -> list[OffsetRange]:
    """The ranges of the batch ``(start, end]``; ``start`` and ``end`` are offsets objects (``@`` keys allowed)."""
    firsts = range_starts(start, end)
    lasts = positions(end)
    ids = end.get(TOPIC_IDS) or {}
    ranges = []
    for topic in sorted(lasts):
        for part in sorted(lasts[topic], key=int):
            first = firsts.get(topic, {}).get(part, 0)
            last = lasts[topic][part]
            if last > first:
                ranges.append(OffsetRange(topic, int(part), first, last, bootstrap, ids.get(topic)))
    return ranges


def _topic_recreated(rng: OffsetRange) -> bool:
    """Whether the topic of a planned range no longer is the topic it was planned on."""
    if rng.topic_id is None:
        return False
    from confluent_kafka.admin import AdminClient

    now = topic_ids(AdminClient({"bootstrap.servers": rng.bootstrap, "log_level": 0}), [rng.topic], timeout=5.0)
    return rng.topic in now and now[rng.topic] != rng.topic_id


def read_range(rng: OffsetRange, timeout: float = READ_TIMEOUT_SECONDS):
    """The messages [start, end) of one partition as Arrow record batches in Spark's Kafka column layout."""
    import pyarrow as pa
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": rng.bootstrap,
            "group.id": "crypto-assets-spark-source",  # required by the client; offsets are never committed
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 8 << 20,
            # Never jump to another offset on its own: a re-created topic must not pass for this range's data.
            "auto.offset.reset": "error",
            "log_level": 0,  # broker outages surface as errors below, not as a flood of client log lines
        }
    )
    schema = pa.schema(
        [
            ("key", pa.binary()),
            ("value", pa.binary()),
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("timestampType", pa.int32()),
        ]
    )
    try:
        consumer.assign([TopicPartition(rng.topic, rng.partition, rng.start)])
        position = rng.start
        deadline = time.monotonic() + timeout
        stall_check = time.monotonic() + STALL_CHECK_SECONDS
        last_error = None
        while position < rng.end:
            messages = consumer.consume(min(CONSUME_BATCH, rng.end - position), timeout=1.0)
            keys, values, offsets, stamps, kinds = [], [], [], [], []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise RuntimeError(f"{rng.topic}[{rng.partition}]: {error}")
                    last_error = error  # broker away, leader moving, topic re-created: no progress; see below
                    continue
                offset = message.offset()
                if offset < position:
                    continue
                if offset >= rng.end:
                    position = rng.end
                    break
                kind, stamp = message.timestamp()
                keys.append(message.key())
                values.append(message.value())
                offsets.append(offset)
                stamps.append(stamp * 1000 if stamp is not None and stamp >= 0 else None)
                kinds.append(kind)
                position = offset + 1
            if offsets:
                deadline = time.monotonic() + timeout
                stall_check = time.monotonic() + STALL_CHECK_SECONDS
                count = len(offsets)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(keys, pa.binary()),
                        pa.array(values, pa.binary()),
                        pa.array([rng.topic] * count, pa.string()),
                        pa.array([rng.partition] * count, pa.int32()),
                        pa.array(offsets, pa.int64()),
                        pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                        pa.array(kinds, pa.int32()),
                    ],
                    schema=schema,
                )
            elif time.monotonic() > stall_check:
                stall_check = time.monotonic() + STALL_CHECK_SECONDS
                if not _topic_recreated(rng):
                    continue
                _worker_logging()
                log.error(
                    "DATA LOSS: %s[%d] offsets %d..%d of this batch are gone: the topic was re-created (broker "
                    "restart?) after the batch was planned; the batch goes on without them",
                    rng.topic,
                    rng.partition,
                    position,
                    rng.end,
                )
                return
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"{rng.topic}[{rng.partition}]: offsets {position}..{rng.end} not readable within {timeout:.0f}s"
                    + (f" (last error: {last_error})" if last_error is not None else "")
                )
    finally:
        consumer.close()


def plan_batch(
    start: dict | None,
    lows: Offsets,
    highs: Offsets,
    ids: dict[str, str],
    certain: set[tuple[str, str]],
    max_rows: int = 0,
    note: dict | None = None,
) -> tuple[dict, list[tuple[str, str, int, int, str]]]:
    """The end offsets of the next batch after ``start``, given what the broker lists now: its earliest and end
    offsets, topic ids and the partitions whose end is certain; and the data losses found, as
    ``(topic, partition, checkpointed position, where reading goes on, why)``.

    A partition whose topic was re-created, whose certain end is below the checkpointed position, or whose
    earliest offset is above it (or that is new and starts above 0) is read from its earliest offset (in
    ``@reset_from``). Otherwise a partition never moves backwards, e.g. while its leader changes. A topic the
    rotation ``note`` says was rotated after everything up to the checkpointed position was read is read from
    the new topic's start with no loss (in ``@rotated``).
    """
    begun = positions(start)
    known_ids = (start or {}).get(TOPIC_IDS) or {}
    highs = {t: dict(parts) for t, parts in highs.items()}
    starts: Offsets = {}
    reset_from: Offsets = {}
    rotated: Offsets = {}
    losses = []
    for topic, parts in highs.items():
        recreated = topic in known_ids and topic in ids and known_ids[topic] != ids[topic]
        old_ends = rotated_ends(note or {}, topic, known_ids[topic], ids[topic]) if recreated else None
        starts[topic] = {}
        for part, high in parts.items():
            low = lows[topic][part]
            previous = begun.get(topic, {}).get(part)
            if previous is None:  # not seen before (a new topic or more partitions): from its earliest offset
                why = f"a partition first seen at earliest offset {low}" if low > 0 else None
                previous = 0
            elif old_ends is not None and previous >= old_ends.get(part, 0):
                starts[topic][part] = rotated.setdefault(topic, {})[part] = low
                continue
            elif recreated:
                why = f"the topic was re-created (id {known_ids[topic]} -> {ids[topic]}), e.g. by a broker restart"
            elif (topic, part) in certain and high < previous:
                why = f"its end offset {high} is below the checkpointed position {previous} (broker restart?)"
            elif low > previous:
                why = f"offsets {previous}..{low - 1} were deleted before they were read (retention)"
            else:
                why = None
            if why is None:
                starts[topic][part] = previous
                parts[part] = max(high, previous)
            else:
                losses.append((topic, part, previous, low, why))
                starts[topic][part] = reset_from.setdefault(topic, {})[part] = low
    ends = split_limit(starts, highs, max_rows) if max_rows > 0 else highs
    for topic, parts in begun.items():  # partitions the broker no longer lists stay where they were
        for part, offset in parts.items():
            ends.setdefault(topic, {}).setdefault(part, offset)
    return canonical(ends, {**known_ids, **ids}, reset_from, rotated), losses


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]):
        options = {k.lower(): v for k, v in options.items()}  # Spark hands options over with lower-case keys
        self.bootstrap = options["kafka.bootstrap.servers"]
        self.topics = [t for t in options["subscribe"].split(",") if t]
        self.starting = options.get("startingoffsets", "earliest")
        self.max_rows = int(options.get("maxoffsetspertrigger", "0") or 0)
        self.rotation_note = options.get("rotationnote")  # see streaming_sensor.trim
        self._consumer = None
        self._admin = None
        self._latest: dict | None = None  # what the last latestOffset call found available, for reportLatestOffset
        self._warned_at = 0.0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_consumer"] = state["_admin"] = None  # clients are made where they are used, never shipped
        return state

    def _client(self):
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": "crypto-assets-spark-source",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                    "queued.max.messages.kbytes": 1024,
                    "log_level": 0,  # outages are reported by this reader, once, not per connect attempt
                }
            )
        return self._consumer

    def _admin_client(self):
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        return self._admin

    def _listing(self) -> tuple[Offsets, Offsets, dict[str, str], set[tuple[str, str]]]:
        """(earliest, end, topic ids, partitions whose end a fetch confirmed) of every subscribed partition."""
        from confluent_kafka import KafkaException, TopicPartition

        client = self._client()
        try:
            metadata = client.list_topics(timeout=10)
            lows: Offsets = {}
            highs: Offsets = {}
            for topic in self.topics:
                if topic not in metadata.topics or metadata.topics[topic].error is not None:
                    raise BrokerUnavailable(f"Kafka topic {topic!r} does not exist on {self.bootstrap}")
                lows[topic], highs[topic] = {}, {}
                for part in sorted(metadata.topics[topic].partitions):
                    low, high = client.get_watermark_offsets(TopicPartition(topic, part), timeout=10, cached=False)
                    lows[topic][str(part)], highs[topic][str(part)] = low, high
            highs, confirmed = confirm_ends(client, highs)
        except KafkaException as exc:
            raise BrokerUnavailable(f"Kafka at {self.bootstrap} unreachable: {exc}") from exc
        return lows, highs, topic_ids(self._admin_client(), self.topics), confirmed

    def _warn_unavailable(self, exc: Exception) -> None:
        _worker_logging()
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("%s: no new micro-batch until it is back (checked every trigger)", exc)

    def initialOffset(self) -> dict:
        lows, highs, ids, _ = self._listing()
        return canonical(highs if self.starting == "latest" else lows, ids)

    def getDefaultReadLimit(self):
        from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

        return ReadMaxRows(self.max_rows) if self.max_rows > 0 else ReadAllAvailable()

    def latestOffset(self, start: dict, limit) -> dict:
        from pyspark.sql.streaming.datasource import ReadMaxRows

        try:
            lows, highs, ids, certain = self._listing()
        except BrokerUnavailable as exc:
            self._warn_unavailable(exc)
            return start  # the same offsets: Spark plans no batch and asks again at the next trigger
        if self._warned_at:
            _worker_logging()
            log.info("Kafka at %s answers again", self.bootstrap)
            self._warned_at = 0.0
        note = read_note(self.rotation_note)
        if rotation_pending(note, (start or {}).get(TOPIC_IDS) or {}):
            return start  # the producer is rotating the topics: plan from the new ones once it is done
        max_rows = limit.max_rows if isinstance(limit, ReadMaxRows) else 0
        end, losses = plan_batch(start, lows, highs, ids, certain, max_rows, note)
        for topic, part, previous, low, why in losses:
            log_data_loss(topic, part, previous, low, why)
        self._latest = canonical(highs, ids)
        return end

    def reportLatestOffset(self) -> dict | None:
        return self._latest

    def partitions(self, start: dict, end: dict) -> Sequence[InputPartition]:
        return offset_ranges(start, end, self.bootstrap)

    def read(self, partition: OffsetRange) -> Iterator:
        return read_range(partition)

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._admin = None
        # Spark's runner process for this reader ends only when the JVM closes its socket (the query stopped):
        # it reads EOF, then fails to write to the closed socket and prints that as a traceback while exiting.
        # That is the query's normal end, so the rest of the runner's exit is silent; any other failure (which
        # Spark also reports through the query) keeps its traceback.
        if isinstance(sys.exc_info()[1], EOFError):
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, sys.stderr.fileno())


def log_data_loss(topic: str, part: str, previous: int, low: int, why: str) -> None:
    _worker_logging()
    log.error(
        "DATA LOSS: Kafka %s[%s] cannot go on from offset %d: %s. Messages after the last micro-batch that "
        "were not read are lost; reading on from offset %d, and the stream job records the missed stretch for "
        "the batch layer to backfill",
        topic,
        part,
        previous,
        why,
        low,
    )


class KafkaSource(DataSource):
    """``spark.readStream.format("kafka_py")`` with the native source's main options: ``kafka.bootstrap.servers``,
    ``subscribe`` (comma-separated topics), ``startingOffsets`` (earliest|latest), ``maxOffsetsPerTrigger``; and
    ``rotationNote``, the path of the producer's topic rotation note (:mod:`streaming_sensor.trim`)."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return KAFKA_COLUMNS

    def streamReader(self, schema) -> KafkaStreamReader:
        return KafkaStreamReader(dict(self.options))
