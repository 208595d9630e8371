"""minute_gaps and exchange_backfill through a real Dagster instance and the real replay server: a partition
range run over recorded data, and the daily schedule evaluated and executed against a live synthetic market."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl
from dagster import AssetKey, DefaultScheduleStatus, build_schedule_context

from crypto_assets.batch.backfill.schedules import REFRESH_ASSETS, refresh_months
from crypto_assets.batch.runs import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    materialize_batch_range,
)
from crypto_assets.definitions import build_definitions
from crypto_assets.exchange.replay import Market, ReplayServer
from crypto_assets.lake.layout import Month
from crypto_assets.settings import load_settings
from crypto_assets_tests.backfill.conftest import (
    HOLE,
    OUTAGE_MINUTES,
    SYMBOL,
    april,
    digest,
    recording,
)
from crypto_assets_tests.test_dagster_assets import instance_at

SYMBOLS = f'[[symbols]]\nname = "{SYMBOL}"\nstart = "2021-03-26"\n'


def checks_of(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def materialization(instance, asset: str):
    return instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization


def test_a_partition_range_run_fills_the_gaps_of_minute_raw_from_the_exchange(
    shared_data, recorded_market, original_lake, project_home, tmp_path
):
    # The configured file lacks ten days; the exchange (the replay of the full recording) has them.
    holed = tmp_path / f"{SYMBOL}_holed.csv"
    stamp = pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC")
    pl.read_csv(recording(shared_data)).filter((stamp < HOLE[0]) | (stamp >= HOLE[1])).write_csv(holed)
    deleted = 10 * 1440 - OUTAGE_MINUTES

    with ReplayServer(recorded_market) as replay, instance_at(tmp_path / "dagster") as instance:
        home = project_home([str(holed)], extra=SYMBOLS + f'[exchange]\nrest_url = "{replay.rest_url}"\n')
        result = materialize_batch_range(instance, load_settings(), "2021-03-01", "2021-04-01")
        assert result.success and len(instance.get_runs()) == 1
        for asset in ("minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "prophet_input"):
            assert instance.get_materialized_partitions(AssetKey(asset)) == {"2021-03-01", "2021-04-01"}, asset

        gaps = materialization(instance, "minute_gaps").metadata
        assert gaps["missing_minutes"].value >= deleted + OUTAGE_MINUTES
        assert "| BTCUSDT | 2021-04-16 00:00 |" in gaps["largest_gaps"].value
        backfill = materialization(instance, "exchange_backfill").metadata
        assert backfill["enabled"].value is True and backfill["minutes_fetched"].value == deleted
        assert backfill["requests"].value >= 15 and backfill["exchange_empty_minutes"].value >= OUTAGE_MINUTES

        checks = checks_of(result)
        filled = checks[("exchange_backfill", "gaps_filled")]
        assert not filled.passed and filled.severity.value == "WARN"
        listed = filled.metadata["remaining_gaps"].value
        assert "| BTCUSDT | 2021-04-20 02:00 | 2021-04-20 04:30 | 150 | yes |" in listed
        assert "| BTCUSDT | 2021-04-25 04:01 | 2021-04-25 08:45 | 284 | yes |" in listed
        assert checks[("exchange_backfill", "unique_minutes")].passed
        errors = [k for k, e in checks.items() if not e.passed and e.severity.value == "ERROR"]
        assert not errors, errors

        lake = home / "lake"
        assert digest(april(lake)) == digest(april(original_lake))
        daily = pl.read_parquet(lake / f"daily_raw/symbol={SYMBOL}/year=2021/month=04/part-0.parquet")
        filled_days = daily.filter(pl.col("date").is_between(date(2021, 4, 16), date(2021, 4, 25)))
        assert filled_days.height == 10
        assert filled_days.filter(pl.col("minute_count") < 1440)["date"].to_list() == [date(2021, 4, 20), date(2021, 4, 25)]

        # Again: minute_raw is rebuilt from the holed file and keeps the fetched minutes; nothing is fetched.
        again = materialize_batch_range(instance, load_settings(), "2021-03-01", "2021-04-01")
        assert again.success
        assert materialization(instance, "exchange_backfill").metadata["minutes_fetched"].value == 0
        assert digest(april(lake)) == digest(april(original_lake))


def test_the_daily_schedule_brings_the_batch_view_up_to_yesterday(project_home, tmp_path):
    now = datetime.now(UTC)
    with ReplayServer(Market.synthetic("tiny", 42)) as replay, instance_at(tmp_path / "dagster") as instance:
        home = project_home(scale="tiny", extra=f'[exchange]\nrest_url = "{replay.rest_url}"\n')
        defs = build_definitions(load_settings())
        schedule = defs.resolve_schedule_def("batch_daily_refresh_schedule")
        assert schedule.default_status == DefaultScheduleStatus.RUNNING
        assert schedule.cron_schedule == "10 0 * * *" and schedule.execution_timezone == "UTC"

        tick = datetime.combine(now.date(), time(0, 10), UTC)
        context = build_schedule_context(instance=instance, scheduled_execution_time=tick)
        (request,) = schedule.evaluate_tick(context).run_requests
        first, last = refresh_months(now.date(), Month(2012, 1))
        assert request.tags[RANGE_START_TAG] == first.start.isoformat()
        assert request.tags[RANGE_END_TAG] == last.start.isoformat() == now.date().replace(day=1).isoformat()

        job = defs.resolve_job_def("batch_daily_refresh")
        result = job.execute_in_process(instance=instance, tags=request.tags)
        assert result.success
        assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == set(REFRESH_ASSETS)
        fetched = materialization(instance, "exchange_backfill").metadata["minutes_fetched"].value
        assert fetched >= 2 * (now.day - 1) * 1440  # nothing of this month is in the files: all of it came from the exchange

        yesterday = now.date() - timedelta(days=1)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            daily = pl.read_parquet(home / f"lake/daily_raw/symbol={symbol}/year={now.year}/month={now.month:02d}/part-0.parquet")
            if yesterday.month == now.month:
                assert daily.filter(pl.col("date") == yesterday)["minute_count"].to_list() == [1440], symbol
            assert daily["date"].max() == now.date()  # today's closed minutes too
        assert checks_of(result)[("daily_raw", "fresh")].passed


def test_refresh_months_include_the_previous_month_on_the_first_days():
    first = Month(2012, 1)
    assert refresh_months(date(2026, 3, 1), first) == (Month(2026, 2), Month(2026, 3))
    assert refresh_months(date(2026, 3, 3), first) == (Month(2026, 2), Month(2026, 3))
    assert refresh_months(date(2026, 3, 4), first) == (Month(2026, 3), Month(2026, 3))
    assert refresh_months(date(2026, 1, 2), first) == (Month(2025, 12), Month(2026, 1))
    assert refresh_months(date(2012, 1, 1), first) == (first, first)  # never before the first partition


def test_an_unreachable_exchange_fails_the_check_not_the_batch_view(shared_data, project_home, tmp_path):
    exchange = '[exchange]\nrest_url = "http://127.0.0.1:9"\ntimeout_seconds = 1.0\n'  # nothing listens there
    home = project_home([str(recording(shared_data))], extra=SYMBOLS + exchange)
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize_batch_range(instance, load_settings(), "2021-04-01", "2021-04-01")
        assert result.success
        filled = checks_of(result)[("exchange_backfill", "gaps_filled")]
        assert not filled.passed and filled.severity.value == "ERROR"
        assert "http://127.0.0.1:9" in filled.description
        assert materialization(instance, "exchange_backfill").metadata["error"].value != "none"
        assert instance.get_materialized_partitions(AssetKey("prophet_input")) == {"2021-04-01"}
    assert (home / f"lake/daily_raw/symbol={SYMBOL}/year=2021/month=04/part-0.parquet").is_file()


def test_with_the_backfill_off_exchange_backfill_is_a_clean_no_op(shared_data, project_home, tmp_path):
    home = project_home([str(recording(shared_data))], extra=SYMBOLS)  # test homes: exchange.backfill = false
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize_batch_range(instance, load_settings(), "2021-04-01", "2021-04-01")
        assert result.success
        metadata = materialization(instance, "exchange_backfill").metadata
        assert metadata["enabled"].value is False and "requests" not in metadata
        filled = checks_of(result)[("exchange_backfill", "gaps_filled")]
        assert filled.severity.value == "WARN" and "backfill disabled" in filled.description
    assert not (home / "lake/exchange_minutes").exists()
