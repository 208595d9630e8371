"""Stretches of exchange time the producer did not capture, kept durably so the batch layer can backfill them.

``<speed_dir>/missed/stretches.jsonl`` holds one JSON line per change: a stretch is opened when the stream
stops (disconnect, shutdown, dropped messages) with ``to`` null, and the same ``id`` is written again with
``to`` once the symbol's stream resumes. Times are exchange event times in UTC milliseconds (also written as
ISO text for people); readers keep the last line per id. A stretch still open means "from here until the
stream came back", which the next producer start closes.

The file stays bounded: whenever a writer appends a closed stretch it also expires stretches closed more than
:data:`KEEP_CLOSED` ago (by the wall clock of their closing line, ``written_ms``), rewriting the file
atomically. Open stretches are always kept. Appends and the rewrite hold one lock file, so an append never
lands in a file that is being replaced. Readers that must not see a stretch twice keep stretch ids, never byte
offsets (see :mod:`crypto_assets.batch.backfill.missed_sensor`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crypto_assets.lake.atomic import append_line, write_text_atomic

log = logging.getLogger(__name__)

# Long enough for the backfill sensor to have seen a closed stretch even after days with the daemon down.
KEEP_CLOSED = timedelta(days=7)


@dataclass(frozen=True)
class MissedStretch:
    id: str
    symbol: str
    from_ms: int  # last event time captured before the stretch
    to_ms: int | None  # first event time captured after it; None while still open
    reason: str
    from_time: str = ""
    to_time: str | None = None
    written_ms: int | None = None  # wall clock when this line was written (lines of older versions lack it)

    @property
    def is_open(self) -> bool:
        return self.to_ms is None


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def stretches_path(speed_dir: Path) -> Path:
    return speed_dir / "missed" / "stretches.jsonl"


def _line(stretch: MissedStretch) -> str:
    return json.dumps(asdict(stretch), sort_keys=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Held by every append and by the expiry's rewrite (which replaces the file, so the file's own lock
    would not do: an append waiting on it would then write to the replaced file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the handle releases the lock


def _whole_lines(path: Path) -> list[bytes]:
    """The file's lines that end with a newline (a crash may leave a torn last one, which readers skip)."""
    if not path.is_file():
        return []
    return [raw for raw in path.read_bytes().splitlines(keepends=True) if raw.endswith(b"\n")]


def expire_stretches(speed_dir: Path, now_ms: int, keep: timedelta = KEEP_CLOSED) -> int:
    """Drop stretches closed more than ``keep`` before ``now_ms``, keeping one line (the last) per stretch;
    returns how many stretches were dropped. Open stretches are always kept. A closed line without a write
    time (written by an older version) gets ``now_ms``, so it is kept for a full ``keep`` from now."""
    path = stretches_path(speed_dir)
    with _locked(path):
        latest = {}
        for raw in _whole_lines(path):
            stretch = MissedStretch(**json.loads(raw))
            latest.pop(stretch.id, None)  # re-insert, so the stretch takes the place of its last line
            latest[stretch.id] = stretch
        cutoff = now_ms - keep // timedelta(milliseconds=1)
        expired = [s for s in latest.values() if not s.is_open and (s.written_ms or now_ms) < cutoff]
        unstamped = any(not s.is_open and s.written_ms is None for s in latest.values())
        if not expired and not unstamped:
            return 0  # nothing to drop: leave the file (and its byte-for-byte lines) as it is
        for stretch in expired:
            del latest[stretch.id]
        kept = (s if s.is_open or s.written_ms is not None else replace(s, written_ms=now_ms) for s in latest.values())
        write_text_atomic("".join(_line(s) + "\n" for s in kept), path)
        return len(expired)


class MissedLog:
    def __init__(self, speed_dir: Path, clock: Callable[[], float] = time.time):
        self.speed_dir = speed_dir
        self.path = stretches_path(speed_dir)
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _append(self, stretch: MissedStretch) -> MissedStretch:
        stretch = replace(stretch, written_ms=self._now_ms())
        with _locked(self.path):
            append_line(self.path, _line(stretch))
        if not stretch.is_open:
            self._expire()
        return stretch

    def _expire(self) -> None:
        """Expire old stretches as a closed one is added (only then does the file hold more to expire);
        the line is already safe, so a failure here (a full disk) is logged and tried again next time."""
        try:
            dropped = expire_stretches(self.speed_dir, self._now_ms())
        except (OSError, ValueError, TypeError) as exc:
            log.warning("could not expire old missed stretches in %s: %s", self.path, exc)
            return
        if dropped:
            log.info("expired %d missed stretch(es) closed more than %s ago from %s", dropped, KEEP_CLOSED, self.path)

    def open(self, symbol: str, from_ms: int, reason: str) -> MissedStretch:
        return self._append(MissedStretch(uuid.uuid4().hex, symbol, int(from_ms), None, reason, _iso(from_ms) or ""))

    def close(self, stretch: MissedStretch, to_ms: int) -> MissedStretch:
        return self._append(replace(stretch, to_ms=int(to_ms), to_time=_iso(to_ms)))

    def record(
        self, symbol: str, from_ms: int, to_ms: int, reason: str, stretch_id: str | None = None
    ) -> MissedStretch:
        """A stretch known whole at once (messages dropped from a full buffer, data lost in Kafka). A given
        ``stretch_id`` makes recording it again (a replayed micro-batch) a repeat of the same stretch."""
        stretch = MissedStretch(
            stretch_id or uuid.uuid4().hex, symbol, int(from_ms), int(to_ms), reason, _iso(from_ms) or "", _iso(to_ms)
        )
        return self._append(stretch)


def read_stretches(speed_dir: Path) -> list[MissedStretch]:
    """All stretches, last state per id, ordered by symbol and start; a torn last line is ignored."""
    latest: dict[str, MissedStretch] = {}
    for raw in _whole_lines(stretches_path(speed_dir)):
        data = json.loads(raw)
        latest[data["id"]] = MissedStretch(**data)
    return sorted(latest.values(), key=lambda s: (s.symbol, s.from_ms, s.id))


def open_stretches(speed_dir: Path) -> dict[str, list[MissedStretch]]:
    found: dict[str, list[MissedStretch]] = {}
    for stretch in read_stretches(speed_dir):
        if stretch.is_open:
            found.setdefault(stretch.symbol, []).append(stretch)
    return found
