"""This package's part of the Dagster code location: the gap report, the exchange backfill, the daily schedule
that keeps the batch view current and the sensor that backfills what the live stream missed."""

from __future__ import annotations

from dagster import Definitions

from crypto_assets.batch.backfill.assets import build_backfill_assets
from crypto_assets.batch.backfill.missed_sensor import build_missed_stretch_sensor
from crypto_assets.batch.backfill.schedules import build_refresh_schedule
from crypto_assets.settings import Settings


def build_defs(settings: Settings) -> Definitions:
    job, schedule = build_refresh_schedule(settings)
    return Definitions(
        assets=build_backfill_assets(settings),
        jobs=[job],
        schedules=[schedule],
        sensors=[build_missed_stretch_sensor(settings, job)],
    )
