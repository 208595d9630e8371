"""This package's part of the Dagster code location: the speed layer's micro-batches as an external asset
(written by the Spark stream, not by Dagster) and the sensor that refreshes the unified view from them."""

from __future__ import annotations

from dagster import AssetSpec, Definitions

from crypto_assets.asset_names import SPEED_MICROBATCHES as SPEED_MICROBATCHES_NAME
from crypto_assets.settings import Settings
from streaming_sensor.sensor import build_unified_view_sensor

SPEED_MICROBATCHES = AssetSpec(
    SPEED_MICROBATCHES_NAME,
    group_name="speed",
    kinds={"spark", "kafka", "parquet"},
    description="1-minute candles and running daily candles the Spark stream commits per micro-batch under "
    "<lake>/speed (candles_1m, daily, and the micro-batch log _log). Written continuously by "
    "`crypto-assets stream`, not materialized by Dagster; the unified_view sensor watches its log.",
)


def build_defs(settings: Settings) -> Definitions:
    return Definitions(assets=[SPEED_MICROBATCHES], sensors=[build_unified_view_sensor(settings)])
