"""A snapshot of the code location, in the way of dagster-open-platform's test_defs.py: the assets (group,
partitioning, automation), their checks, the jobs, schedules and sensors. A change to any of them shows up here
and is reviewed as such."""

from __future__ import annotations

from dagster import Definitions, StaticPartitionsDefinition

from crypto_assets.definitions import build_definitions
from crypto_assets.settings import load_settings


def _partitions(partitions_def) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, StaticPartitionsDefinition):
        return f"static {','.join(partitions_def.get_partition_keys())}"
    return f"{type(partitions_def).__name__} from {partitions_def.get_first_partition_key()}"


def snapshot(defs: Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": _partitions(node.partitions_def),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "materializable": node.is_materializable,
        }
    checks = sorted(f"{k.asset_key.to_user_string()}.{k.name}" for k in graph.asset_check_keys)
    repository = defs.get_repository_def()
    jobs = sorted(j.name for j in repository.get_all_jobs() if not j.name.startswith("__"))
    schedules = {s.name: (s.cron_schedule, s.job_name, s.default_status.value) for s in repository.schedule_defs}
    sensors = {s.name: (type(s).__name__, s.default_status.value) for s in repository.sensor_defs}
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "schedules": dict(sorted(schedules.items())),
        "sensors": dict(sorted(sensors.items())),
    }


def test_definitions_snapshot(project_home):
    # Test homes use the tiny synthetic market, so the batch months start at its first month (2025-11).
    project_home()
    assert snapshot(build_definitions(load_settings())) == EXPECTED


EXPECTED: dict = {
    "assets": {
        "daily_filled": {
            "group": "batch",
            "partitions": "MonthlyPartitionsDefinition from 2025-11-01",
            "automation": None,
            "materializable": True,
        },
        "daily_raw": {
            "group": "batch",
            "partitions": "MonthlyPartitionsDefinition from 2025-11-01",
            "automation": None,
            "materializable": True,
        },
        "exchange_backfill": {
            "group": "batch",
            "partitions": "MonthlyPartitionsDefinition from 2025-11-01",
            "automation": None,
            "materializable": True,
        },
        "forecast_metrics": {
            "group": "forecast",
            "partitions": "static BTCUSDT,ETHUSDT",
            "automation": None,
            "materializable": True,
        },
        "forecast_results": {
            "group": "forecast",
            "partitions": "static BTCUSDT,ETHUSDT",
            "automation": None,
            "materializable": True,
        },
        "forecasts": {
            "group": "forecast",
            "partitions": "static BTCUSDT,ETHUSDT",
            "automation": None,
            "materializable": True,
        },
        "minute_gaps": {
            "group": "batch",
            "partitions": "MonthlyPartitionsDefinition from 2025-11-01",
            "automation": None,
            "materializable": True,
        },
        "minute_raw": {
            "group": "batch",
            "partitions": "MonthlyPartitionsDefinition from 2025-11-01",
            "automation": None,
            "materializable": True,
        },
        "prophet_input": {
            "group": "batch",
            "partitions": "MonthlyPartitionsDefinition from 2025-11-01",
            "automation": None,
            "materializable": True,
        },
        "speed_microbatches": {"group": "speed", "partitions": None, "automation": None, "materializable": False},
        "unified_view": {
            "group": "serving",
            "partitions": "static BTCUSDT,ETHUSDT",
            "automation": "on_batch_updates",
            "materializable": True,
        },
    },
    "checks": [
        "daily_filled.moving_averages_correct",
        "daily_filled.no_missing_days",
        "daily_filled.schema",
        "daily_raw.fresh",
        "daily_raw.ohlc_consistent",
        "daily_raw.schema",
        "daily_raw.unique_days",
        "exchange_backfill.gaps_filled",
        "exchange_backfill.unique_minutes",
        "forecast_metrics.interval_coverage",
        "forecast_metrics.mape_1d_below_threshold",
        "forecast_metrics.not_worse_than_naive",
        "minute_raw.minutes_complete",
        "minute_raw.ohlc_consistent",
        "minute_raw.schema",
        "minute_raw.sources_clean",
        "minute_raw.unique_minutes",
        "prophet_input.complete",
        "prophet_input.schema",
        "unified_view.batch_precedence",
        "unified_view.moving_averages_continuous",
        "unified_view.one_row_per_day",
        "unified_view.schema",
    ],
    "jobs": ["batch_daily_refresh", "batch_graph", "forecast_graph", "run_retention_job"],
    "schedules": {
        "batch_daily_refresh_schedule": ("10 0 * * *", "batch_daily_refresh", "RUNNING"),
        "run_retention_schedule": ("25 * * * *", "run_retention_job", "RUNNING"),
    },
    "sensors": {
        "backfill_missed_stretches": ("SensorDefinition", "RUNNING"),
        "unified_view_on_batch_updates": ("AutomationConditionSensorDefinition", "RUNNING"),
        "unified_view_on_new_microbatches": ("SensorDefinition", "RUNNING"),
    },
}


def test_the_batch_engine_resource_follows_spark_engine(project_home):
    """The code location binds the engine spark.engine names; building it starts no JVM."""
    from crypto_assets.batch.engine import BATCH_ENGINE_KEY, BatchEngineResource
    from crypto_assets.spark.resources import SparkEngineResource

    project_home()
    polars = build_definitions(load_settings()).resources[BATCH_ENGINE_KEY]
    assert type(polars) is BatchEngineResource
    project_home(extra='[spark]\nengine = "spark"\nmaster = "local[2]"\n')
    defs = build_definitions(load_settings())
    spark = defs.resources[BATCH_ENGINE_KEY]
    assert isinstance(spark, SparkEngineResource)
    assert spark.pyspark.spark_config["spark.master"] == "local[2]"
    kinds = {spec.key.to_user_string(): spec.kinds for spec in defs.resolve_all_asset_specs()}
    assert "spark" in kinds["daily_raw"] and "spark" in kinds["minute_raw"]
