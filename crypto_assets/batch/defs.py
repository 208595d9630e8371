"""The batch layer's part of the Dagster code location: the batch graph and its job, the exchange backfill with
its schedule and sensor, and the market resource the assets share. The engine they run on (``batch_engine``)
is bound where the code location is put together (``crypto_assets.spark.defs``)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from crypto_assets.batch.assets import GROUP, build_batch_assets
from crypto_assets.batch.backfill import defs as backfill_defs
from crypto_assets.resources import MarketDataResource
from crypto_assets.settings import Settings

BATCH = AssetSelection.groups(GROUP)


def build_defs(settings: Settings) -> Definitions:
    batch_job = define_asset_job(
        "batch_graph",
        selection=BATCH,
        description="minute_raw -> daily_raw -> daily_filled -> prophet_input for a range of months",
    )
    core = Definitions(
        assets=build_batch_assets(settings),
        jobs=[batch_job],
        resources={"market": MarketDataResource.for_settings(settings)},
    )
    return Definitions.merge(core, backfill_defs.build_defs(settings))
