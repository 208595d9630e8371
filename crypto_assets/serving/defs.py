"""This package's part of the Dagster code location: the unified view, its checks, and the automation that
refreshes it after batch updates."""

from __future__ import annotations

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus, Definitions

from crypto_assets.asset_names import UNIFIED_VIEW
from crypto_assets.serving.assets import build_serving_assets
from crypto_assets.settings import Settings

AUTOMATION_SENSOR = "unified_view_on_batch_updates"


def build_defs(settings: Settings) -> Definitions:
    # Dagster's default automation sensor starts stopped; this one is on as soon as a daemon runs the code
    # location, so the view follows batch updates in `crypto-assets up` and in any deployment.
    automation = AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=AssetSelection.assets(UNIFIED_VIEW),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.serving.sensor_min_interval_seconds,
        description="Evaluates unified_view's automation condition: one refresh per symbol after daily_filled "
        "is updated (a backfill or the daily refresh), with or without the speed layer.",
    )
    return Definitions(assets=build_serving_assets(settings), sensors=[automation])
