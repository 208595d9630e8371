"""The streaming sensor against a real Dagster instance and real micro-batch log files."""

from __future__ import annotations

import json
from datetime import timedelta

from dagster import AssetKey, DagsterRunStatus, build_sensor_context, validate_run_config
from dagster._core.test_utils import create_run_for_test

from crypto_assets.definitions import build_definitions
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at
from crypto_assets_tests.serving.helpers import (
    minute_rows,
    speed_candles,
    utc,
    write_microbatch,
)
from streaming_sensor.sensor import SENSOR_NAME

T0 = utc(2026, 1, 5, 12)


def microbatch(lake, batch_id: int) -> None:
    start = T0 + timedelta(minutes=batch_id)
    candles = speed_candles(minute_rows("BTCUSDT", start, 1, 100.0 + batch_id), batch_id, start + timedelta(seconds=30))
    write_microbatch(lake, batch_id, candles, committed=start + timedelta(seconds=31))


def test_sensor_requests_a_run_per_symbol_for_new_microbatches_and_skips_otherwise(project_home, tmp_path):
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
        assert sorted(r.partition_key for r in first.run_requests) == ["BTCUSDT", "ETHUSDT"]
        assert all(r.asset_selection == [AssetKey("unified_view")] for r in first.run_requests)
        assert {r.run_key for r in first.run_requests} == {"BTCUSDT:1", "ETHUSDT:1"}
        # The daemon launches each request on the implicit asset job; its run config must be valid there.
        asset_job = defs.resolve_implicit_global_asset_job_def()
        for request in first.run_requests:
            validate_run_config(asset_job, request.run_config)
        assert json.loads(first.cursor)["last_batch_id"] == 1

        again = tick(first.cursor)
        assert not again.run_requests and "no new micro-batch after batch 1" in again.skip_message
        assert again.cursor in (None, first.cursor)

        # A symbol whose previous run is still going waits for a later tick instead of piling up runs.
        going = create_run_for_test(
            instance,
            status=DagsterRunStatus.STARTED,
            tags={"dagster/sensor_name": SENSOR_NAME, "dagster/partition": "BTCUSDT"},
        )
        microbatch(lake, 2)
        second = tick(first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["ETHUSDT"]
        assert json.loads(second.cursor) == {"last_batch_id": 2, "requested": {"BTCUSDT": 1, "ETHUSDT": 2}}

        instance.report_run_canceled(going)
        third = tick(second.cursor)
        assert [(r.partition_key, r.run_key) for r in third.run_requests] == [("BTCUSDT", "BTCUSDT:2")]
        assert json.loads(third.cursor)["requested"] == {"BTCUSDT": 2, "ETHUSDT": 2}
        assert not tick(third.cursor).run_requests

        # The log starting over (a fresh lake) is noticed rather than ignored forever.
        stale = json.dumps({"last_batch_id": 99, "requested": {"BTCUSDT": 99, "ETHUSDT": 99}})
        restarted = tick(stale)
        assert sorted(r.partition_key for r in restarted.run_requests) == ["BTCUSDT", "ETHUSDT"]
