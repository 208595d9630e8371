"""Backfill what the live stream missed: a sensor on the producer's missed-stretch log
(``<home>/speed/missed/stretches.jsonl``).

When a stretch closes (the stream is back after a disconnect, a full buffer or a producer crash), the sensor
requests one batch refresh run (minute_raw through the exchange backfill to prophet_input) over the months the
stretch touches, so the missed minutes come from the exchange's REST klines and the unified view has them within
minutes instead of after the next daily refresh. It reads only that file (bounded: the writers expire
stretches closed more than a week ago, see :mod:`crypto_assets.lake.missed`) and returns at once.

Its JSON cursor holds the ids of the closed stretches the file held at the last tick, all of them requested (or
reported, with the backfill off) by then. Ids, not byte offsets, as the expiry rewrites the file: a stretch is
requested once whatever was dropped before it, and the cursor shrinks as stretches expire. A stretch that
closed and expired while the daemon was down for longer than the expiry window is not requested.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG
from crypto_assets.lake.layout import Month
from crypto_assets.lake.missed import MissedStretch, read_stretches, stretches_path
from crypto_assets.settings import Settings

SENSOR_NAME = "backfill_missed_stretches"
MIN_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class Cursor:
    closed: frozenset[str] = field(default_factory=frozenset)  # ids of closed stretches already handled

    @classmethod
    def parse(cls, raw: str | None, speed_dir: Path) -> Cursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        if "offset" in data:  # written by a version that read the file from a byte offset
            return cls(closed_before_offset(stretches_path(speed_dir), int(data["offset"])))
        return cls(frozenset(data.get("closed", ())))

    def to_json(self) -> str:
        return json.dumps({"closed": sorted(self.closed)})


def closed_before_offset(path: Path, offset: int) -> frozenset[str]:
    """The stretches an offset cursor had seen: those closed in the file's first ``offset`` bytes. Only while
    the file is as that version wrote it (no line has a write time); once rewritten the offset means nothing,
    and each closed stretch is requested once more, which only repeats a refresh."""
    data = path.read_bytes() if path.is_file() else b""
    if b'"written_ms"' in data:
        return frozenset()
    lines = [json.loads(line) for line in data[:offset].splitlines(keepends=True) if line.endswith(b"\n")]
    return frozenset(line["id"] for line in lines if line.get("to_ms") is not None)


def newly_closed(speed_dir: Path, cursor: Cursor) -> tuple[list[MissedStretch], Cursor]:
    """Closed stretches not handled yet, and the cursor once they are (every closed stretch in the file)."""
    closed = [s for s in read_stretches(speed_dir) if not s.is_open]
    return [s for s in closed if s.id not in cursor.closed], Cursor(frozenset(s.id for s in closed))


def run_key_for(stretches: list[MissedStretch]) -> str:
    """The same stretches give the same key, so Dagster launches one run for them even if a tick repeats."""
    return "missed-" + hashlib.sha256(" ".join(sorted(s.id for s in stretches)).encode()).hexdigest()[:20]


def months_of(stretches: list[MissedStretch]) -> tuple[Month, Month]:
    """First and last month partition the stretches touch."""
    first = min(datetime.fromtimestamp(s.from_ms / 1000, UTC) for s in stretches)
    last = max(datetime.fromtimestamp(s.to_ms / 1000, UTC) for s in stretches if s.to_ms is not None)
    return Month.of(first), Month.of(last)


def build_missed_stretch_sensor(settings: Settings, job: JobDefinition):
    @sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=MIN_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="When the live stream's producer records a closed missed stretch, refreshes the batch graph "
        "over its months so the exchange backfill fetches the missed minutes.",
    )
    def backfill_missed_stretches(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        closed, cursor = newly_closed(settings.speed_dir, Cursor.parse(context.cursor, settings.speed_dir))
        if not closed:
            return SensorResult(
                skip_reason=SkipReason("no missed stretch closed since the last tick"), cursor=cursor.to_json()
            )
        if not settings.exchange.backfill:
            return SensorResult(
                skip_reason=SkipReason(f"{len(closed)} missed stretch(es) closed, but exchange.backfill is false"),
                cursor=cursor.to_json(),
            )
        first, last = months_of(closed)
        minutes = sum(((s.to_ms or s.from_ms) - s.from_ms) // 60_000 for s in closed)
        context.log.info(
            f"{len(closed)} missed stretch(es), about {minutes:,} minutes ({', '.join(sorted({s.reason for s in closed}))}): "
            f"refreshing {first} .. {last}"
        )
        request = RunRequest(
            run_key=run_key_for(closed),
            tags={RANGE_START_TAG: first.start.isoformat(), RANGE_END_TAG: last.start.isoformat()},
        )
        return SensorResult(run_requests=[request], cursor=cursor.to_json())

    return backfill_missed_stretches
