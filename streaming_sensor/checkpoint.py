"""Reading the stream job's Spark checkpoint without Spark: which batches it planned and committed, and their
Kafka offsets. The stream job uses it, and so does the producer, which may only drop Kafka records the stream
has committed (:mod:`streaming_sensor.trim`)."""

from __future__ import annotations

import json
from pathlib import Path

QUERY_NAME = "speed_candles"


def checkpoint_path(speed_dir: Path) -> Path:
    return speed_dir / "checkpoints" / QUERY_NAME


def read_offset_log(checkpoint: Path, batch_id: int) -> dict | None:
    """The source's offsets object at the end of ``batch_id`` (None when Spark has not planned it)."""
    path = checkpoint / "offsets" / str(batch_id)
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    # "v1", the batch metadata, then one line per source: the only source's offsets are the last line.
    return json.loads(lines[-1]) if len(lines) >= 3 else None


def batch_ids(checkpoint: Path, log: str) -> list[int]:
    """The batch ids in Spark's ``offsets`` (planned) or ``commits`` (done) log, oldest first."""
    directory = checkpoint / log
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def committed_end(checkpoint: Path) -> dict:
    """The offsets object at the end of the newest committed batch: everything before it is read and written
    for good (a crash replays only batches after it). Empty when nothing is committed."""
    committed = batch_ids(checkpoint, "commits")
    return (read_offset_log(checkpoint, committed[-1]) or {}) if committed else {}
