"""The missed-stretch log stays bounded and the backfill sensor still asks for every closed stretch once.

A model-based test runs random sequences of what the producer, the stream job and the daemon do (open, close
and record stretches, a crash's torn line, time passing, expiry, sensor ticks) against a plain reference; real
processes append while another rewrites the file; and a cursor of the version that kept byte offsets goes on.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import build_sensor_context
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from crypto_assets.batch.backfill.missed_sensor import SENSOR_NAME, run_key_for
from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG
from crypto_assets.definitions import build_definitions
from crypto_assets.lake.missed import (
    KEEP_CLOSED,
    MissedLog,
    MissedStretch,
    expire_stretches,
    read_stretches,
    stretches_path,
)
from crypto_assets.settings import load_settings

HOUR_MS = 3_600_000
KEEP_MS = KEEP_CLOSED // timedelta(milliseconds=1)
WALL_START_MS = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
# Exchange times of the stretches: months of 2021, so the sensor's month range says which stretches it covers.
EXCHANGE_START_MS = int(datetime(2021, 1, 1, tzinfo=UTC).timestamp() * 1000)
# A real (unreachable) URL turns the backfill on; the sensor itself never calls the exchange.
BACKFILL_ON = '[[symbols]]\nname = "BTCUSDT"\n[exchange]\nbackfill = true\nrest_url = "http://127.0.0.1:9"\n'


def _month(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-01")


class MissedLogModel(RuleBasedStateMachine):
    """The log under test beside a reference: which stretches are open, which closed ones the file must still
    hold (and since when), and which the sensor has asked for."""

    speed_dir: Path  # set by the test
    sensor = None

    def __init__(self):
        super().__init__()
        for path in self.speed_dir.rglob("*"):  # each sequence starts from an empty speed folder
            if path.is_file():
                path.unlink()
        self.now_ms = WALL_START_MS
        self.log = MissedLog(self.speed_dir, clock=lambda: self.now_ms / 1000)
        self.open: dict[str, MissedStretch] = {}
        self.closed_at: dict[str, int] = {}  # closed stretches the file must hold -> wall time of their last line
        self.closed: dict[str, MissedStretch] = {}
        self.requested: set[str] = set()
        self.cursor: str | None = None
        self.exchange_ms = EXCHANGE_START_MS

    def _exchange_times(self, days: int) -> tuple[int, int]:
        start = self.exchange_ms
        self.exchange_ms += days * 86_400_000
        return start, self.exchange_ms

    def _closed(self, stretch: MissedStretch) -> None:
        self.closed[stretch.id] = stretch
        self.closed_at[stretch.id] = self.now_ms
        self._expired()  # a writer that appends a closed stretch expires old ones

    def _expired(self) -> None:
        for stretch_id, at in list(self.closed_at.items()):
            if at < self.now_ms - KEEP_MS:
                del self.closed_at[stretch_id]

    @rule(symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]), days=st.integers(0, 40))
    def open_stretch(self, symbol, days):
        start, _ = self._exchange_times(days)
        stretch = self.log.open(symbol, start, "disconnected")
        self.open[stretch.id] = stretch

    @precondition(lambda self: self.open)
    @rule(data=st.data(), days=st.integers(0, 40))
    def close_stretch(self, data, days):
        stretch_id = data.draw(st.sampled_from(list(self.open)))  # in creation order: ids are random
        _, end = self._exchange_times(days)
        self._closed(self.log.close(self.open.pop(stretch_id), end))

    @rule(days=st.integers(0, 40))
    def record_stretch(self, days):
        start, end = self._exchange_times(days)
        self._closed(self.log.record("BTCUSDT", start, end, "buffer full"))

    @precondition(lambda self: self.closed_at)
    @rule(data=st.data())
    def record_again(self, data):
        """A replayed micro-batch records the same stretch (same id) again."""
        stretch = self.closed[data.draw(st.sampled_from(list(self.closed_at)))]
        self._closed(self.log.record(stretch.symbol, stretch.from_ms, stretch.to_ms, stretch.reason, stretch.id))

    @rule()
    def crash_mid_append(self):
        """A writer killed mid-line leaves a torn last line."""
        path = stretches_path(self.speed_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write(b'{"from_ms": 1, "id": "torn')

    @rule(hours=st.integers(1, 24 * 5))
    def time_passes(self, hours):
        self.now_ms += hours * HOUR_MS

    @rule()
    def expire(self):
        expire_stretches(self.speed_dir, self.now_ms)
        self._expired()
        closed = [s for s in read_stretches(self.speed_dir) if not s.is_open]
        assert all(s.written_ms >= self.now_ms - KEEP_MS for s in closed)  # bounded by the window

    @rule()
    def sensor_ticks(self):
        result = self.sensor.evaluate_tick(build_sensor_context(cursor=self.cursor))
        expected = [self.closed[i] for i in sorted(set(self.closed_at) - self.requested)]
        if not expected:
            assert not result.run_requests
        else:
            [request] = result.run_requests
            assert request.run_key == run_key_for(expected)  # exactly these stretches, each asked for once
            assert request.tags[RANGE_START_TAG] == _month(min(s.from_ms for s in expected))
            assert request.tags[RANGE_END_TAG] == _month(max(s.to_ms for s in expected))
            self.requested |= {s.id for s in expected}
        self.cursor = result.cursor
        assert len(json.loads(self.cursor)["closed"]) == len(self.closed_at)  # the cursor shrinks with the file

    @invariant()
    def the_file_holds_what_the_reference_holds(self):
        found = {s.id: s for s in read_stretches(self.speed_dir)}
        assert {i for i, s in found.items() if s.is_open} == set(self.open)  # an open stretch is never dropped
        assert {i for i, s in found.items() if not s.is_open} == set(self.closed_at)


def test_expiry_keeps_open_and_recent_stretches_and_the_sensor_asks_for_each_closed_one_once(project_home):
    project_home(extra=BACKFILL_ON)
    config = load_settings()
    MissedLogModel.speed_dir = config.speed_dir
    MissedLogModel.sensor = build_definitions(config).resolve_sensor_def(SENSOR_NAME)
    run_state_machine_as_test(
        MissedLogModel,
        settings=settings(
            max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        ),
    )


def _append_stretches(speed_dir: Path, count: int, opened: multiprocessing.Queue) -> None:
    """A writer process: opens ``count`` stretches (kept open) and records as many closed ones."""
    log = MissedLog(speed_dir)
    for i in range(count):
        opened.put(log.open("BTCUSDT", i, "disconnected").id)
        log.record("ETHUSDT", i, i + 1, "buffer full")
    opened.put(None)


def _expire_all_closed(speed_dir: Path) -> None:
    """Expire every closed stretch, as if all were old."""
    expire_stretches(speed_dir, int(time.time() * 1000) + HOUR_MS, keep=timedelta(0))


def _expire_until_stopped(speed_dir: Path, stop) -> None:
    """The rewriting process: expires again and again."""
    while not stop.is_set():
        _expire_all_closed(speed_dir)


@pytest.mark.integration  # several writer processes
def test_appends_of_several_processes_survive_another_process_rewriting_the_file(tmp_path):
    context = multiprocessing.get_context("spawn")
    opened, stop = context.Queue(), context.Event()
    writers = [context.Process(target=_append_stretches, args=(tmp_path, 150, opened)) for _ in range(2)]
    pruner = context.Process(target=_expire_until_stopped, args=(tmp_path, stop))
    for process in [pruner, *writers]:
        process.start()
    ids, finished = set(), 0
    while finished < len(writers):
        stretch_id = opened.get(timeout=120)
        finished += stretch_id is None
        ids |= {stretch_id} - {None}
    stop.set()
    for process in [pruner, *writers]:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(ids) == 300
    left = read_stretches(tmp_path)
    assert {s.id for s in left if s.is_open} == ids  # no append was lost to a rewrite
    _expire_all_closed(tmp_path)
    assert {s.id for s in read_stretches(tmp_path)} == ids  # and every closed one goes


def _legacy_line(stretch_id: str, from_ms: int, to_ms: int | None) -> bytes:
    """A line as the version before expiry wrote it (no write time)."""
    data = {"id": stretch_id, "symbol": "BTCUSDT", "from_ms": from_ms, "to_ms": to_ms, "reason": "disconnected"}
    return (json.dumps(data | {"from_time": "", "to_time": None}, sort_keys=True) + "\n").encode()


def test_a_byte_offset_cursor_of_the_earlier_version_goes_on_without_asking_twice(project_home):
    project_home(extra=BACKFILL_ON)
    config = load_settings()
    sensor = build_definitions(config).resolve_sensor_def(SENSOR_NAME)
    path = stretches_path(config.speed_dir)
    path.parent.mkdir(parents=True)
    seen = _legacy_line("a", EXCHANGE_START_MS, EXCHANGE_START_MS + 1) + _legacy_line("b", EXCHANGE_START_MS, None)
    path.write_bytes(seen + _legacy_line("b", EXCHANGE_START_MS, EXCHANGE_START_MS + 2))
    old_cursor = json.dumps({"offset": len(seen)})

    result = sensor.evaluate_tick(build_sensor_context(cursor=old_cursor))
    [request] = result.run_requests  # only b, which closed after the old cursor
    assert request.run_key == run_key_for([MissedStretch("b", "BTCUSDT", 0, 0, "")])
    assert not sensor.evaluate_tick(build_sensor_context(cursor=result.cursor)).run_requests

    # Once new lines carry write times the file may have been rewritten, so the offset means nothing: the
    # closed stretches are asked for once more (a repeated refresh) rather than risk missing one.
    log = MissedLog(config.speed_dir)
    log.close(log.open("BTCUSDT", EXCHANGE_START_MS, "disconnected"), EXCHANGE_START_MS + 3)
    [request] = sensor.evaluate_tick(build_sensor_context(cursor=old_cursor)).run_requests
    assert request.run_key == run_key_for(read_stretches(config.speed_dir))
