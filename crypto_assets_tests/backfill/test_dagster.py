"""minute_gaps and exchange_backfill through a real Dagster instance and the real replay server: a partition
range run over recorded data, and the daily schedule evaluated and executed against a live synthetic market."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DefaultScheduleStatus,
    MetadataValue,
    build_schedule_context,
)

from crypto_assets.batch.backfill.schedules import REFRESH_ASSETS, last_covered, refresh_months
from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.definitions import build_definitions
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
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
from crypto_assets_tests.conftest import instance_at

SYMBOLS = f'[[symbols]]\nname = "{SYMBOL}"\nstart = "2021-03-26"\n'


def checks_of(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def materialization(instance, asset: str):
    return instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization


@pytest.mark.integration  # a replay exchange server
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
        # The recording ends before the window does: those minutes are still to fetch (the outages alone would pass).
        assert not filled.passed and filled.severity.value == "WARN" and "not filled" in filled.description
        assert filled.metadata["judged_window"].value == "2021-03 .. 2021-04"
        assert filled.metadata["judged_symbols"].value == SYMBOL
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
        assert filled_days.filter(pl.col("minute_count") < 1440)["date"].to_list() == [
            date(2021, 4, 20),
            date(2021, 4, 25),
        ]

        # Again: minute_raw is rebuilt from the holed file and keeps the fetched minutes; nothing is fetched.
        again = materialize_batch_range(instance, load_settings(), "2021-03-01", "2021-04-01")
        assert again.success
        assert materialization(instance, "exchange_backfill").metadata["minutes_fetched"].value == 0
        assert digest(april(lake)) == digest(april(original_lake))


def minutes_between(a: datetime, b: datetime) -> int:
    return int((b - a).total_seconds() // 60)


def daily_minute_counts(home, symbol: str, month: Month) -> dict[date, int]:
    path = home / f"lake/daily_raw/symbol={symbol}/year={month.year}/month={month.month:02d}/part-0.parquet"
    return dict(pl.read_parquet(path).select("date", "minute_count").iter_rows())


def run_tick(project_home, instance, exchange_clock: datetime, tick: datetime):
    """Evaluate the daily schedule at ``tick`` and execute its run against a replay of the synthetic market whose
    clock stands (all but) still at ``exchange_clock``: the exchange has every minute before it, none after."""
    with ReplayServer(Market.synthetic("tiny", 42), start=exchange_clock, speed=1e-6) as replay:
        home = project_home(scale="tiny", extra=f'[exchange]\nrest_url = "{replay.rest_url}"\n')
        defs = build_definitions(load_settings())
        schedule = defs.resolve_schedule_def("batch_daily_refresh_schedule")
        context = build_schedule_context(instance=instance, scheduled_execution_time=tick)
        (request,) = schedule.evaluate_tick(context).run_requests
        result = defs.resolve_job_def("batch_daily_refresh").execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == set(REFRESH_ASSETS)
    return home, request, materialization(instance, "exchange_backfill").metadata


@pytest.mark.integration  # a replay exchange server
def test_the_daily_schedule_brings_the_batch_view_up_to_yesterday_and_catches_up_after_downtime(project_home, tmp_path):
    """Fixed ticks, whatever today's date: the synthetic files end in December 2025, so every minute of 2026 the
    batch view has came from the exchange."""
    project_home(scale="tiny")
    defs = build_definitions(load_settings())
    schedule = defs.resolve_schedule_def("batch_daily_refresh_schedule")
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "10 0 * * *" and schedule.execution_timezone == "UTC"
    june, july = Month(2026, 6), Month(2026, 7)

    with instance_at(tmp_path / "dagster") as instance:
        # Mid-month, on a new instance: the running month only.
        clock = datetime(2026, 6, 15, 0, 12, tzinfo=UTC)
        home, request, backfill = run_tick(project_home, instance, clock, datetime(2026, 6, 15, 0, 10, tzinfo=UTC))
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2026-06-01", "2026-06-01")
        assert backfill["minutes_fetched"].value == 2 * minutes_between(datetime(2026, 6, 1, tzinfo=UTC), clock)
        assert backfill["covered_until"].value == (clock - timedelta(minutes=5)).timestamp()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            counts = daily_minute_counts(home, symbol, june)
            assert [counts[date(2026, 6, d)] for d in range(1, 15)] == [1440] * 14, symbol  # up to yesterday
            assert counts[date(2026, 6, 15)] == 12  # and today's closed minutes

        # Then downtime: no tick ran from 16 June to 4 July. The first one after it, on the 5th, goes back to June
        # (the first-days rule alone would refresh July only and leave 15..30 June missing for good).
        assert refresh_months(date(2026, 7, 5), Month(2012, 1)) == (july, july)
        clock = datetime(2026, 7, 5, 0, 12, tzinfo=UTC)
        home, request, backfill = run_tick(project_home, instance, clock, datetime(2026, 7, 5, 0, 10, tzinfo=UTC))
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2026-06-01", "2026-07-01")
        assert backfill["minutes_fetched"].value == 2 * minutes_between(datetime(2026, 6, 15, 0, 12, tzinfo=UTC), clock)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            counts = daily_minute_counts(home, symbol, june)
            assert [counts[date(2026, 6, d)] for d in range(1, 31)] == [1440] * 30, symbol  # June's final days too
            counts = daily_minute_counts(home, symbol, july)
            assert [counts[date(2026, 7, d)] for d in range(1, 5)] == [1440] * 4, symbol
        minute_raw = pl.read_parquet(home / "lake/minute_raw/symbol=BTCUSDT/year=2026/month=06/part-0.parquet")
        assert minute_raw.height == 30 * 1440 and minute_raw["open_time"].is_unique().all()


def test_refresh_months_include_the_previous_month_on_the_first_days():
    first = Month(2012, 1)
    assert refresh_months(date(2026, 3, 1), first) == (Month(2026, 2), Month(2026, 3))
    assert refresh_months(date(2026, 3, 3), first) == (Month(2026, 2), Month(2026, 3))
    assert refresh_months(date(2026, 3, 4), first) == (Month(2026, 3), Month(2026, 3))
    assert refresh_months(date(2026, 1, 2), first) == (Month(2025, 12), Month(2026, 1))
    assert refresh_months(date(2012, 1, 1), first) == (first, first)  # never before the first partition


def test_refresh_months_start_where_the_last_complete_backfill_stopped():
    first = Month(2012, 1)
    covered = datetime(2026, 2, 27, 0, 5, tzinfo=UTC)
    assert refresh_months(date(2026, 3, 9), first, covered) == (Month(2026, 2), Month(2026, 3))  # after downtime
    assert refresh_months(date(2026, 6, 2), first, covered) == (Month(2026, 2), Month(2026, 6))  # however long
    assert refresh_months(date(2026, 3, 9), first, datetime(2026, 3, 1, 0, 5, tzinfo=UTC)) == (Month(2026, 3),) * 2
    assert refresh_months(date(2026, 3, 9), first, datetime(2026, 4, 1, tzinfo=UTC)) == (Month(2026, 3),) * 2
    # The first-days rule stays a floor: a run whose later steps failed after a complete backfill is redone.
    assert refresh_months(date(2026, 3, 2), first, datetime(2026, 3, 1, 0, 5, tzinfo=UTC)) == (
        Month(2026, 2),
        Month(2026, 3),
    )


def test_the_last_covered_time_ignores_errors_and_stops_at_a_disabled_backfill(tmp_path):
    def report(partition: str, **metadata):
        instance.report_runless_asset_event(
            AssetMaterialization("exchange_backfill", partition=partition, metadata=metadata)
        )

    with instance_at(tmp_path / "dagster") as instance:
        assert last_covered(instance) is None
        old = datetime(2026, 5, 20, tzinfo=UTC)
        report("2026-05-01", enabled=False)
        report("2026-05-01", enabled=True, error="none", covered_until=MetadataValue.timestamp(old))
        assert last_covered(instance) == old
        report("2026-05-01", enabled=True, error="GET ... failed after 5 attempts")  # the exchange was down
        assert last_covered(instance) == old
        report(
            "2021-04-01",
            enabled=True,
            error="none",
            covered_until=MetadataValue.timestamp(datetime(2021, 5, 1, tzinfo=UTC)),
        )
        assert last_covered(instance) == old  # a later range backfill of old months says nothing about May
        report("2026-05-01", enabled=False)  # turned off: older records say nothing about the months since
        assert last_covered(instance) is None


def test_an_unreachable_exchange_fails_the_check_not_the_batch_view(shared_data, project_home, tmp_path, quick_retries):
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
