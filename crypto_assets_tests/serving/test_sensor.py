"""The streaming sensor against a real Dagster instance and real micro-batch log files."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import timedelta

from dagster import AssetKey, build_sensor_context, job, op, validate_run_config

import streaming_sensor.sensor
from crypto_assets.definitions import build_definitions
from crypto_assets.serving.refresh_runs import REFRESH_TAG
from crypto_assets.serving.refresh_runs import SPEED_REFRESH_SENSOR as SENSOR_NAME
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at
from crypto_assets_tests.serving.helpers import (
    minute_rows,
    speed_candles,
    utc,
    write_microbatch,
)
from streaming_sensor.sensor import RANGE_END_TAG, RANGE_START_TAG

T0 = utc(2026, 1, 5, 12)


@contextmanager
def run_in_progress(instance, tags: dict[str, str]):
    """A real run on ``instance`` that stays STARTED until the block ends (a refresh still going)."""
    started, release = threading.Event(), threading.Event()

    @op
    def hold():
        started.set()
        release.wait(60)

    @job
    def refresh_still_going():
        hold()

    worker = threading.Thread(target=lambda: refresh_still_going.execute_in_process(instance=instance, tags=tags))
    worker.start()
    try:
        assert started.wait(60), "the held run never started"
        yield
    finally:
        release.set()
        worker.join(60)


def microbatch(lake, batch_id: int) -> None:
    start = T0 + timedelta(minutes=batch_id)
    candles = speed_candles(minute_rows("BTCUSDT", start, 1, 100.0 + batch_id), batch_id, start + timedelta(seconds=30))
    write_microbatch(lake, batch_id, candles, committed=start + timedelta(seconds=31))


def test_sensor_requests_one_run_for_every_symbol_with_new_microbatches_and_skips_otherwise(
    project_home, tmp_path, monkeypatch
):
    home = project_home(extra="[serving]\nsensor_min_interval_seconds = 5\n")
    lake = home / "lake"
    settings = load_settings()
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.minimum_interval_seconds == 5
    assert sensor.default_status.value == "RUNNING"
    assert sensor.asset_selection.resolve(defs.get_repository_def().asset_graph) == {AssetKey("unified_view")}

    with instance_at(tmp_path / "dagster") as instance:

        def tick(cursor):
            return sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor, definitions=defs))

        empty = tick(None)
        assert not empty.run_requests and "no micro-batch logged yet" in empty.skip_message

        microbatch(lake, 0)
        microbatch(lake, 1)
        first = tick(None)
        (request,) = first.run_requests  # one run for both symbols: a range of the symbol partitions
        assert request.asset_selection == [AssetKey("unified_view")] and request.partition_key is None
        assert request.tags[RANGE_START_TAG] == "BTCUSDT" and request.tags[RANGE_END_TAG] == "ETHUSDT"
        assert request.tags[REFRESH_TAG[0]] == REFRESH_TAG[1] and request.run_key == "BTCUSDT..ETHUSDT:1"
        assert request.tags["dagster/max_runtime"] == "300"  # run monitoring fails it if its worker dies
        # The daemon launches the request on the implicit asset job; its run config must be valid there.
        validate_run_config(defs.resolve_implicit_global_asset_job_def(), request.run_config)
        assert json.loads(first.cursor)["last_batch_id"] == 1

        again = tick(first.cursor)
        assert not again.run_requests and "no new micro-batch after batch 1" in again.skip_message
        assert again.cursor in (None, first.cursor)

        # While the previous refresh is still going, no run is requested: the symbols wait for a later tick.
        with run_in_progress(instance, tags={"dagster/sensor_name": SENSOR_NAME}):
            microbatch(lake, 2)
            waiting = tick(first.cursor)
            assert not waiting.run_requests and "still going" in waiting.skip_message
            assert waiting.cursor in (None, first.cursor)
            # ...unless it is older than a refresh's maximum runtime: its worker died (a code server killed
            # mid-run leaves it STARTED for ever), and waiting for it would stop the view for good.
            monkeypatch.setattr(streaming_sensor.sensor, "REFRESH_MAX_RUNTIME_SECONDS", 0)
            assert tick(first.cursor).run_requests
            monkeypatch.undo()

        second = tick(first.cursor)
        (request,) = second.run_requests
        assert request.run_key == "BTCUSDT..ETHUSDT:2"
        assert json.loads(second.cursor) | {"checked_at": None} == {
            "last_batch_id": 2,
            "requested": {"BTCUSDT": 2, "ETHUSDT": 2},
            "checked_at": None,
        }
        assert not tick(second.cursor).run_requests

        # A symbol left behind (an older cursor) is refreshed alone, as a single partition.
        behind = json.dumps({"last_batch_id": 2, "requested": {"BTCUSDT": 2, "ETHUSDT": 1}})
        (request,) = tick(behind).run_requests
        assert request.partition_key == "ETHUSDT" and request.run_key == "ETHUSDT:2"

        # The log starting over (a fresh lake) is noticed rather than ignored forever.
        stale = json.dumps({"last_batch_id": 99, "requested": {"BTCUSDT": 99, "ETHUSDT": 99}})
        (restarted,) = tick(stale).run_requests
        assert restarted.tags[RANGE_START_TAG] == "BTCUSDT" and restarted.tags[RANGE_END_TAG] == "ETHUSDT"


def test_routine_refreshes_evaluate_the_views_checks_at_most_every_view_check_minutes(project_home, tmp_path):
    """Dagster keeps every check result, even of a deleted run: a refresh every few seconds would grow its
    index by ~36 MB a day. The sensor asks for the checks when the last asking is older than the setting."""
    home = project_home(extra="[serving]\nview_check_minutes = 10\n")
    settings = load_settings()
    defs = build_definitions(settings)
    view_checks = {key for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key.path == ["unified_view"]}
    assert len(view_checks) == 4
    t = 1_800_000_000.0
    with instance_at(tmp_path / "dagster") as instance:
        context = build_sensor_context(instance=instance, definitions=defs)

        def tick(cursor, batch_id, now):
            microbatch(home / "lake", batch_id)
            context.update_cursor(cursor)
            result = streaming_sensor.sensor.evaluate(
                context, settings.lake_dir, settings.symbol_names, timedelta(minutes=10), now
            )
            (request,) = result.run_requests
            validate_run_config(defs.resolve_implicit_global_asset_job_def(), request.run_config)
            return request.asset_check_keys, result.cursor

        checks, cursor = tick(None, 0, t)  # never asked: due
        assert checks is None  # None: every check of the selected asset
        checks, cursor = tick(cursor, 1, t + 60)
        assert checks == []  # none: evaluated 1 minute ago
        checks, cursor = tick(cursor, 2, t + 599)
        assert checks == []
        checks, cursor = tick(cursor, 3, t + 600)
        assert checks is None and json.loads(cursor)["checked_at"] == t + 600
        checks, _ = tick(cursor, 4, t + 601)
        assert checks == []
        # 0 asks on every refresh.
        context.update_cursor(cursor)
        microbatch(home / "lake", 5)
        (request,) = streaming_sensor.sensor.evaluate(
            context, settings.lake_dir, settings.symbol_names, timedelta(0), t + 602
        ).run_requests
        assert request.asset_check_keys is None
