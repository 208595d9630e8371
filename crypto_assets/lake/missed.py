"""Stretches of exchange time the producer did not capture, kept durably so the batch layer can backfill them.

``<speed_dir>/missed/stretches.jsonl`` holds one JSON line per change: a stretch is opened when the stream
stops (disconnect, shutdown, dropped messages) with ``to`` null, and the same ``id`` is written again with
``to`` once the symbol's stream resumes. Times are exchange event times in UTC milliseconds (also written as
ISO text for people); readers keep the last line per id. A stretch still open means "from here until the
stream came back", which the next producer start closes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from crypto_assets.lake.atomic import append_line


@dataclass(frozen=True)
class MissedStretch:
    id: str
    symbol: str
    from_ms: int  # last event time captured before the stretch
    to_ms: int | None  # first event time captured after it; None while still open
    reason: str
    from_time: str = ""
    to_time: str | None = None

    @property
    def is_open(self) -> bool:
        return self.to_ms is None


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def stretches_path(speed_dir: Path) -> Path:
    return speed_dir / "missed" / "stretches.jsonl"


def _append(path: Path, stretch: MissedStretch) -> None:
    append_line(path, json.dumps(asdict(stretch), sort_keys=True))


class MissedLog:
    def __init__(self, speed_dir: Path):
        self.path = stretches_path(speed_dir)

    def open(self, symbol: str, from_ms: int, reason: str) -> MissedStretch:
        stretch = MissedStretch(uuid.uuid4().hex, symbol, int(from_ms), None, reason, _iso(from_ms) or "")
        _append(self.path, stretch)
        return stretch

    def close(self, stretch: MissedStretch, to_ms: int) -> MissedStretch:
        closed = MissedStretch(
            stretch.id, stretch.symbol, stretch.from_ms, int(to_ms), stretch.reason, stretch.from_time, _iso(to_ms)
        )
        _append(self.path, closed)
        return closed

    def record(
        self, symbol: str, from_ms: int, to_ms: int, reason: str, stretch_id: str | None = None
    ) -> MissedStretch:
        """A stretch known whole at once (messages dropped from a full buffer, data lost in Kafka). A given
        ``stretch_id`` makes recording it again (a replayed micro-batch) a repeat of the same stretch."""
        stretch = MissedStretch(
            stretch_id or uuid.uuid4().hex, symbol, int(from_ms), int(to_ms), reason, _iso(from_ms) or "", _iso(to_ms)
        )
        _append(self.path, stretch)
        return stretch


def read_stretches(speed_dir: Path) -> list[MissedStretch]:
    """All stretches, last state per id, ordered by symbol and start; a torn last line is ignored."""
    path = stretches_path(speed_dir)
    if not path.is_file():
        return []
    latest: dict[str, MissedStretch] = {}
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                continue
            data = json.loads(raw)
            latest[data["id"]] = MissedStretch(**data)
    return sorted(latest.values(), key=lambda s: (s.symbol, s.from_ms, s.id))


def open_stretches(speed_dir: Path) -> dict[str, list[MissedStretch]]:
    found: dict[str, list[MissedStretch]] = {}
    for stretch in read_stretches(speed_dir):
        if stretch.is_open:
            found.setdefault(stretch.symbol, []).append(stretch)
    return found
