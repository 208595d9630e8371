"""A Spark streaming source that reads Kafka topics through confluent-kafka, for clusters without Spark's
Kafka connector jars.

Rows have the same columns as Spark's own ``kafka`` source (key, value, topic, partition, offset, timestamp,
timestampType), so everything downstream is identical whichever source runs. Offsets are the Kafka offsets
themselves, ``{"<topic>": {"<partition>": <next offset>}}`` like the native source's JSON, so a micro-batch is
an exact offset range per partition: a batch replayed after a crash reads exactly the same messages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

SOURCE_NAME = "kafka_py"
KAFKA_COLUMNS = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int"
)
READ_TIMEOUT_SECONDS = 60.0
CONSUME_BATCH = 10_000

Offsets = dict[str, dict[str, int]]


@dataclass(frozen=True)
class OffsetRange(InputPartition):
    topic: str
    partition: int
    start: int
    end: int  # exclusive
    bootstrap: str


def split_limit(start: Offsets, latest: Offsets, max_rows: int) -> Offsets:
    """End offsets that advance at most ``max_rows`` messages in total, shared fairly across partitions."""
    pending = [(t, p, start.get(t, {}).get(p, 0), end) for t, parts in latest.items() for p, end in parts.items()]
    ends = {t: dict(parts) for t, parts in latest.items()}
    backlog = [(t, p, s, e) for t, p, s, e in pending if e > s]
    budget = max_rows
    while backlog and budget > 0:
        share = max(1, budget // len(backlog))
        nxt = []
        for t, p, s, e in backlog:
            take = min(share, e - s, budget)
            budget -= take
            if s + take < e:
                nxt.append((t, p, s + take, e))
            ends[t][p] = s + take
        backlog = nxt
    for t, p, s, _ in backlog:  # budget spent: these partitions stop where they got to
        ends[t][p] = s
    return ends


def offset_ranges(start: Offsets, end: Offsets, bootstrap: str) -> list[OffsetRange]:
    ranges = []
    for topic in sorted(end):
        for part in sorted(end[topic], key=int):
            first = start.get(topic, {}).get(part, 0)
            last = end[topic][part]
            if last > first:
                ranges.append(OffsetRange(topic, int(part), first, last, bootstrap))
    return ranges


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
        while position < rng.end:
            messages = consumer.consume(min(CONSUME_BATCH, rng.end - position), timeout=1.0)
            keys, values, offsets, stamps, kinds = [], [], [], [], []
            for message in messages:
                if message.error():
                    raise RuntimeError(f"{rng.topic}[{rng.partition}]: {message.error()}")
                offset = message.offset()
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
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"{rng.topic}[{rng.partition}]: offsets {position}..{rng.end} not readable within {timeout:.0f}s"
                )
    finally:
        consumer.close()


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]):
        self.bootstrap = options["kafka.bootstrap.servers"]
        self.topics = [t for t in options["subscribe"].split(",") if t]
        self.starting = options.get("startingOffsets", "earliest")
        self.max_rows = int(options.get("maxOffsetsPerTrigger", "0") or 0)
        self._consumer = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_consumer"] = None  # a client is made where it is used, never shipped to workers
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
                }
            )
        return self._consumer

    def _watermarks(self, high: bool) -> Offsets:
        from confluent_kafka import TopicPartition

        client = self._client()
        metadata = client.list_topics(timeout=10)
        found: Offsets = {}
        for topic in self.topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise RuntimeError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}")
            found[topic] = {}
            for part in sorted(metadata.topics[topic].partitions):
                low, hi = client.get_watermark_offsets(TopicPartition(topic, part), timeout=10, cached=False)
                found[topic][str(part)] = hi if high else low
        return self._confirm_ends(found) if high else found

    def _confirm_ends(self, listed: Offsets) -> Offsets:
        """Raise listed end offsets to the high watermark a fetch reports.

        Some Kafka-compatible brokers (Tansu) answer a ListOffsets(latest) request with the start of the
        newest record batch rather than its end; a fetch of the last listed record returns the true high
        watermark. On Kafka itself both agree and this only costs one small fetch per partition.
        """
        from confluent_kafka import TopicPartition

        client = self._client()
        probes = [TopicPartition(t, int(p), end - 1) for t, parts in listed.items() for p, end in parts.items() if end > 0]
        if not probes:
            return listed
        client.assign(probes)
        waiting = {(tp.topic, tp.partition) for tp in probes}
        deadline = time.monotonic() + 5.0
        while waiting and time.monotonic() < deadline:
            for message in client.consume(len(waiting), timeout=0.5):
                if not message.error():
                    waiting.discard((message.topic(), message.partition()))
        confirmed = {t: dict(parts) for t, parts in listed.items()}
        for tp in probes:
            _, high = client.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            if high is not None and high > 0:
                confirmed[tp.topic][str(tp.partition)] = max(high, listed[tp.topic][str(tp.partition)])
        client.unassign()
        return confirmed

    def initialOffset(self) -> Offsets:
        return self._watermarks(high=self.starting == "latest")

    def getDefaultReadLimit(self):
        from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

        return ReadMaxRows(self.max_rows) if self.max_rows > 0 else ReadAllAvailable()

    def latestOffset(self, start: Offsets, limit) -> Offsets:
        from pyspark.sql.streaming.datasource import ReadMaxRows

        latest = self._watermarks(high=True)
        for topic, parts in latest.items():  # never move backwards, e.g. while a partition's leader changes
            for part, end in parts.items():
                parts[part] = max(end, start.get(topic, {}).get(part, 0))
        if isinstance(limit, ReadMaxRows):
            return split_limit(start, latest, limit.max_rows)
        return latest

    def reportLatestOffset(self) -> Offsets:
        return self._watermarks(high=True)

    def partitions(self, start: Offsets, end: Offsets) -> Sequence[InputPartition]:
        return offset_ranges(start, end, self.bootstrap)

    def read(self, partition: OffsetRange) -> Iterator:
        return read_range(partition)

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaSource(DataSource):
    """``spark.readStream.format("kafka_py")`` with the native source's main options: ``kafka.bootstrap.servers``,
    ``subscribe`` (comma-separated topics), ``startingOffsets`` (earliest|latest), ``maxOffsetsPerTrigger``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return KAFKA_COLUMNS

    def streamReader(self, schema) -> KafkaStreamReader:
        return KafkaStreamReader(dict(self.options))
