"""A Spark session outside Dagster for tests and benchmarks, built the way the batch engine's resource builds it."""

from __future__ import annotations

from dagster_pyspark.resources import spark_session_from_config
from pyspark.sql import SparkSession

from crypto_assets.settings import Settings
from crypto_assets.spark.resources import python_for_workers, spark_config


def start_session(settings: Settings) -> SparkSession:
    python_for_workers()
    return spark_session_from_config(spark_config(settings))
