"""The engine the batch assets run on, as a Dagster resource (key ``batch_engine``): this one runs the steps
and minute_raw's merge with Polars in the run's process. The Spark engine
(:class:`crypto_assets.spark.resources.SparkEngineResource`) runs them on a Spark session instead; the code
location binds one or the other from ``spark.engine``, so this package never imports Spark."""

from __future__ import annotations

from collections.abc import Callable

from dagster import ConfigurableResource

from crypto_assets.batch.minute_ingest import IngestResult, ingest_window
from crypto_assets.batch.pipeline import POLARS, BatchEngine

BATCH_ENGINE_KEY = "batch_engine"


class BatchEngineResource(ConfigurableResource):
    """Runs the batch steps with Polars in the run's process."""

    def steps(self) -> BatchEngine:
        """What daily_raw, daily_filled and prophet_input run their step on."""
        return POLARS

    def ingest(self) -> Callable[..., IngestResult]:
        """How minute_raw merges its window into the lake."""
        return ingest_window
