"""This package's part of the Dagster code location: the unified view, its checks, the automation that
refreshes it after batch updates, and the scheduled job that keeps those refreshes' run history bounded."""

from __future__ import annotations

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus, Definitions

from crypto_assets.asset_names import UNIFIED_VIEW
from crypto_assets.serving.assets import build_serving_assets
from crypto_assets.serving.refresh_runs import AUTOMATION_SENSOR, REFRESH_RUN_TAGS
from crypto_assets.serving.run_retention import build_run_retention
from crypto_assets.settings import Settings


def build_defs(settings: Settings) -> Definitions:
    # Dagster's default automation sensor starts stopped; this one is on as soon as a daemon runs the code
    # location, so the view follows batch updates in `crypto-assets up` and in any deployment.
    automation = AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=AssetSelection.assets(UNIFIED_VIEW),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.serving.sensor_min_interval_seconds,
        run_tags=REFRESH_RUN_TAGS,
        description="Evaluates unified_view's automation condition: one refresh per symbol after daily_filled "
        "is updated (a backfill or the daily refresh), with or without the speed layer.",
    )
    # The refresh sensors' runs would pile up for as long as the system runs; this job deletes the old ones.
    retention_job, retention_schedule = build_run_retention(settings)
    return Definitions(
        assets=build_serving_assets(settings),
        sensors=[automation],
        jobs=[retention_job],
        schedules=[retention_schedule],
    )
