"""Backfill what the live stream missed: a sensor on the producer's missed-stretch log
(``<home>/speed/missed/stretches.jsonl``).

When a stretch closes (the stream is back after a disconnect, a full buffer or a producer crash), the sensor
requests one batch refresh run (minute_raw through the exchange backfill to prophet_input) over the months the
stretch touches, so the missed minutes come from the exchange's REST klines and the unified view has them within
minutes instead of after the next daily refresh. It reads only that append-only file, from a byte offset kept in
its JSON cursor, and returns at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from crypto_assets.lake.missed import MissedStretch, stretches_path
from crypto_assets.settings import Settings

SENSOR_NAME = "backfill_missed_stretches"
MIN_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class Cursor:
    offset: int = 0  # bytes of the stretch log already read

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        return cls(int(json.loads(raw).get("offset", 0))) if raw else cls()

    def to_json(self) -> str:
        return json.dumps({"offset": self.offset})


def closed_since(path: Path, offset: int) -> tuple[list[MissedStretch], int]:
    """Stretches closed in the lines after ``offset`` and the offset after the last whole line.

    A log shorter than the offset was replaced, so it is read from the start; a torn last line is left for the
    next tick.
    """
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    if len(data) < offset:
        offset = 0
    end = data.rfind(b"\n") + 1
    closed = []
    for line in data[offset:end].splitlines():
        stretch = MissedStretch(**json.loads(line))
        if not stretch.is_open:
            closed.append(stretch)
    return closed, max(end, offset)


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
        cursor = Cursor.parse(context.cursor)
        closed, offset = closed_since(stretches_path(settings.speed_dir), cursor.offset)
        if not closed:
            return SensorResult(
                skip_reason=SkipReason("no missed stretch closed since the last tick"), cursor=Cursor(offset).to_json()
            )
        if not settings.exchange.backfill:
            return SensorResult(
                skip_reason=SkipReason(f"{len(closed)} missed stretch(es) closed, but exchange.backfill is false"),
                cursor=Cursor(offset).to_json(),
            )
        first, last = months_of(closed)
        minutes = sum(((s.to_ms or s.from_ms) - s.from_ms) // 60_000 for s in closed)
        context.log.info(
            f"{len(closed)} missed stretch(es), about {minutes:,} minutes ({', '.join(sorted({s.reason for s in closed}))}): "
            f"refreshing {first} .. {last}"
        )
        request = RunRequest(
            run_key=f"missed-{offset}",
            tags={RANGE_START_TAG: first.start.isoformat(), RANGE_END_TAG: last.start.isoformat()},
        )
        return SensorResult(run_requests=[request], cursor=Cursor(offset).to_json())

    return backfill_missed_stretches
