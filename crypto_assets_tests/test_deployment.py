"""The code location on instances a platform team would run: Dagster's stock SQLite storage and its PostgreSQL
storage on a real server. A whole-history batch backfill, then the automation that keeps unified_view current
without the speed layer, evaluated through Dagster's public ``evaluate_automation_conditions``."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import AssetKey, evaluate_automation_conditions, materialize

from crypto_assets.batch.partitions import monthly_partitions
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.definitions import build_definitions
from crypto_assets.serving.refresh_runs import AUTOMATION_SENSOR
from crypto_assets.serving.store import read_view
from crypto_assets.settings import load_settings

BATCH_ASSETS = ["minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input"]
UNIFIED_VIEW = AssetKey("unified_view")
SYMBOLS = {"BTCUSDT", "ETHUSDT"}


def _refresh_requested(defs, instance, cursor):
    """One tick of unified_view's automation condition, then the runs it asks for, as the sensor's daemon
    would launch them."""
    result = evaluate_automation_conditions(defs, instance, cursor=cursor)
    requested = result.get_requested_partitions(UNIFIED_VIEW) if result.total_requested else set()
    for symbol in sorted(requested):
        run = materialize(
            list(defs.assets),
            selection=[UNIFIED_VIEW],
            partition_key=symbol,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )
        assert run.success, symbol
        failed = [e.check_name for e in run.get_asset_check_evaluations() if not e.passed]
        assert not failed, (symbol, failed)
    return requested, result.cursor


@pytest.mark.slow
def test_whole_history_backfill_then_unified_view_follows_the_batch_layer(storage_instance, shared_data, project_home):
    instance = storage_instance
    home = project_home([str(shared_data / "binance_spot_1m" / "2021")])
    settings = load_settings()
    defs = build_definitions(settings)
    assert defs.resolve_sensor_def(AUTOMATION_SENSOR).default_status.value == "RUNNING"
    months = monthly_partitions(settings.history_start).get_partition_keys()

    # The automation sensor is ticking before the backfill (a daemon already running): nothing to do yet.
    requested, cursor = _refresh_requested(defs, instance, None)
    assert requested == set()

    result = materialize_batch_range(instance, settings, log_level="WARNING")
    assert result.success
    for name in BATCH_ASSETS:
        assert instance.get_materialized_partitions(AssetKey(name)) == set(months), name
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 16
    errors = [
        (e.asset_key.to_user_string(), e.check_name)
        for e in evaluations
        if not e.passed and e.severity.value == "ERROR"
    ]
    assert not errors
    # The 2021 files hold real exchange outages; with the exchange backfill off, completeness warns.
    [complete] = [e for e in evaluations if e.check_name == "minutes_complete"]
    assert not complete.passed and complete.severity.value == "WARN"

    # No micro-batch anywhere (speed layer off): the batch update alone refreshes every symbol, once.
    assert not (home / "lake" / "speed").exists()
    requested, cursor = _refresh_requested(defs, instance, cursor)
    assert requested == SYMBOLS
    assert instance.get_materialized_partitions(UNIFIED_VIEW) == SYMBOLS
    for symbol in SYMBOLS:
        view = read_view(home / "lake", symbol)
        assert view.height and view["source"].unique().to_list() == ["batch"]
    requested, cursor = _refresh_requested(defs, instance, cursor)
    assert requested == set()

    # A later backfill of one month (a corrected file, the daily refresh) brings the view up to date again.
    def view_runs() -> list[str]:
        records = instance.fetch_materializations(UNIFIED_VIEW, limit=100).records
        return sorted(r.partition_key for r in records)

    assert view_runs() == sorted(SYMBOLS)
    assert materialize_batch_range(instance, settings, "2021-04-01", "2021-04-01", log_level="WARNING").success
    requested, cursor = _refresh_requested(defs, instance, cursor)
    assert requested == SYMBOLS
    assert view_runs() == sorted([*SYMBOLS, *SYMBOLS])
    btc = read_view(home / "lake", "BTCUSDT")
    assert btc.filter(pl.col("date").dt.month() == 4).height == 30
