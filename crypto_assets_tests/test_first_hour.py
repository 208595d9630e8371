"""What a newcomer meets first: each symbol's own history, checks that say what they judged, freshness of
closed days, the newest rows in ``query`` and the instance settings ``up`` writes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import yaml

from crypto_assets.batch import checks
from crypto_assets.batch.backfill.gaps import symbol_starts
from crypto_assets.batch.metadata import months_label
from crypto_assets.batch.partitions import batch_partitions
from crypto_assets.batch.pipeline import latest_closed_date
from crypto_assets.batch.source_catalog import history_starts
from crypto_assets.dagster_home import write_dagster_yaml, write_workspace_yaml
from crypto_assets.lake.datasets import write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.output import render
from crypto_assets.settings import load_settings
from crypto_assets_tests.minute_checks import minutes_complete


def test_the_synthetic_default_starts_each_symbol_at_its_own_first_day(project_home, tmp_path):
    project_home(scale="small")
    settings = load_settings()
    # Configured (default) starts are 2012-01-01 and 2017-08-17; the synthetic market begins 2025-09-01.
    assert history_starts(settings) == {"BTCUSDT": date(2025, 9, 1), "ETHUSDT": date(2025, 9, 1)}
    assert symbol_starts(settings, ["ETHUSDT"]) == {"ETHUSDT": date(2025, 9, 1)}
    assert batch_partitions(settings).get_first_partition_key() == "2025-09-01"


def test_configured_sources_keep_the_configured_starts(project_home, tmp_path):
    source = tmp_path / "BTCUSDT-1m.csv"
    source.write_text("")
    project_home([str(source)], extra='[[symbols]]\nname = "BTCUSDT"\nstart = "2019-03-02"\n')
    settings = load_settings()
    assert history_starts(settings) == {"BTCUSDT": date(2019, 3, 2)}
    assert batch_partitions(settings).get_first_partition_key() == "2019-03-01"


def test_a_later_configured_start_wins_over_the_synthetic_one(project_home):
    project_home(scale="tiny", extra='[[symbols]]\nname = "BTCUSDT"\nstart = "2025-11-20"\n')
    assert history_starts(load_settings()) == {"BTCUSDT": date(2025, 11, 20)}


def test_freshness_judges_the_latest_closed_day_not_todays_running_one(tmp_path):
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=3), today - timedelta(days=2), today]
    frame = pl.DataFrame({"symbol": ["BTCUSDT"] * 3, "date": days, "close": [1.0, 2.0, 3.0]})
    write_months(frame, tmp_path, "daily_raw", "date", ["BTCUSDT"], months_between(days[0], today + timedelta(days=1)))
    assert latest_closed_date(tmp_path, "daily_raw", "BTCUSDT") == days[1]
    assert latest_closed_date(tmp_path, "daily_raw", "ETHUSDT") is None
    stale = checks.fresh(days[1], max_age_hours=24)
    assert not stale.passed and stale.metadata["latest_day"] == days[1].isoformat()


def test_gaps_in_the_files_pass_when_the_exchange_backfill_fetches_them_and_warn_otherwise():
    t0 = datetime(2025, 9, 1, tzinfo=UTC)
    minutes = pl.DataFrame(
        {"symbol": ["A"] * 3, "open_time": [t0, t0 + timedelta(minutes=1), t0 + timedelta(minutes=5)]}
    )
    alone = minutes_complete(minutes)
    assert not alone.passed and alone.metadata["missing_minutes"] == 3
    handed_on = minutes_complete(minutes, backfilled=True)
    assert handed_on.passed and "exchange_backfill" in handed_on.description and handed_on.metadata["gaps"] == 1


def test_months_label_names_the_window_of_a_run():
    assert months_label(datetime(2025, 9, 1), datetime(2026, 1, 1)) == "2025-09 .. 2025-12"
    assert months_label(datetime(2025, 9, 1), datetime(2025, 10, 1)) == "2025-09"


def test_query_table_shows_the_newest_rows():
    frame = pl.DataFrame({"date": [date(2026, 1, d) for d in range(1, 11)], "close": list(range(10))})
    text = render(frame, "table", max_rows=3, newest=True)
    assert "2026-01-10" in text and "2026-01-08" in text and "2026-01-07" not in text
    assert text.startswith("… 7 older rows")


def test_the_instance_settings_are_documented_keys_and_the_workspace_names_one_code_server(tmp_path):
    config = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    assert config["run_queue"]["dequeue_interval_seconds"] == 1
    assert config["backfills"]["use_threads"] and config["sensors"]["use_threads"]
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(tmp_path)) as instance:  # Dagster validates the keys
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        # A run whose worker died fails after its dagster/max_runtime instead of staying STARTED for ever.
        assert instance.run_monitoring_enabled and instance.run_monitoring_settings["poll_interval_seconds"] == 30
    workspace = yaml.safe_load(write_workspace_yaml(tmp_path, "127.0.0.1", 4266, "crypto_assets").read_text())
    assert workspace == {
        "load_from": [{"grpc_server": {"host": "127.0.0.1", "port": 4266, "location_name": "crypto_assets"}}]
    }
