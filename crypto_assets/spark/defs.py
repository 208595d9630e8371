"""This package's part of the Dagster code location: the ``pyspark`` resource of the Spark batch engine.

The batch assets themselves live in ``crypto_assets.batch.assets``; with ``spark.engine = "spark"`` they require
this resource and run their steps on its session.
"""

from __future__ import annotations

from dagster import Definitions

from crypto_assets.settings import Settings
from crypto_assets.spark.resources import RESOURCE_KEY, pyspark_resource


def build_defs(settings: Settings) -> Definitions:
    return Definitions(resources={RESOURCE_KEY: pyspark_resource(settings)})
