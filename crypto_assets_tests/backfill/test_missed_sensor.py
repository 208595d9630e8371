"""The sensor on the producer's missed-stretch log: a closed stretch asks for a batch refresh over its months,
and that run fetches the missed minutes from the exchange (the real replay server over the real recording)."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import build_sensor_context

from crypto_assets.batch.backfill.missed_sensor import SENSOR_NAME
from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.definitions import build_definitions
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.missed import MissedLog
from crypto_assets.settings import load_settings
from crypto_assets_tests.backfill.conftest import HOLE, OUTAGE_MINUTES, SYMBOL, april, recording
from crypto_assets_tests.conftest import instance_at

SYMBOLS = f'[[symbols]]\nname = "{SYMBOL}"\nstart = "2021-03-26"\n'


def _ms(moment) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.integration  # a replay exchange server
def test_a_closed_missed_stretch_refreshes_its_months_and_the_minutes_come_back(
    shared_data, recorded_market, original_lake, project_home, tmp_path
):
    holed = tmp_path / f"{SYMBOL}_holed.csv"
    stamp = pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC")
    pl.read_csv(recording(shared_data)).filter((stamp < HOLE[0]) | (stamp >= HOLE[1])).write_csv(holed)

    with ReplayServer(recorded_market) as replay, instance_at(tmp_path / "dagster") as instance:
        home = project_home([str(holed)], extra=SYMBOLS + f'[exchange]\nrest_url = "{replay.rest_url}"\n')
        settings = load_settings()
        sensor = build_definitions(settings).resolve_sensor_def(SENSOR_NAME)

        quiet = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=None))
        assert not quiet.run_requests and "no missed stretch" in quiet.skip_message

        log = MissedLog(settings.speed_dir)
        stretch = log.open(SYMBOL, _ms(HOLE[0]), "disconnected")
        still_open = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=quiet.cursor))
        assert not still_open.run_requests  # nothing to fetch until the stream is back
        log.close(stretch, _ms(HOLE[1]))
        ticked = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=still_open.cursor))
        [request] = ticked.run_requests
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2021-04-01", "2021-04-01")

        again = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=ticked.cursor))
        assert not again.run_requests  # each stretch is asked for once

        result = materialize_batch_range(instance, settings, request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG])
        assert result.success
        restored = pl.read_parquet(april(home / "lake"))
        expected = pl.read_parquet(april(original_lake))
        assert restored.equals(expected)  # the ten days are back, except the exchange's own outages
        hole = restored.filter(pl.col("open_time").is_between(HOLE[0], HOLE[1], closed="left"))
        assert hole.height == 10 * 1440 - OUTAGE_MINUTES


def test_with_the_backfill_off_a_closed_stretch_is_only_reported(project_home, tmp_path):
    project_home(extra=SYMBOLS)  # the test homes turn exchange.backfill off
    settings = load_settings()
    log = MissedLog(settings.speed_dir)
    log.close(log.open(SYMBOL, _ms(HOLE[0]), "producer stopped"), _ms(HOLE[1]))
    sensor = build_definitions(settings).resolve_sensor_def(SENSOR_NAME)
    with instance_at(tmp_path / "dagster") as instance:
        result = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=None))
    assert not result.run_requests and "exchange.backfill is false" in result.skip_message
