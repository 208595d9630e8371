"""This package's part of the Dagster code location: the batch assets' engine, chosen by ``spark.engine``.

The batch assets themselves live in ``crypto_assets.batch.assets`` and take the ``batch_engine`` resource; the
Spark engine runs their steps on a ``pyspark`` session, the Polars engine in the run's process.
"""

from __future__ import annotations

from dagster import Definitions

from crypto_assets.batch.engine import BATCH_ENGINE_KEY
from crypto_assets.settings import Settings
from crypto_assets.spark.resources import batch_engine_resource


def build_defs(settings: Settings) -> Definitions:
    return Definitions(resources={BATCH_ENGINE_KEY: batch_engine_resource(settings)})
