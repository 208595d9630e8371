"""The Spark session behind the batch engine: dagster-pyspark's ``PySparkResource`` configured from the settings.

With ``spark.engine = "polars"`` no batch asset requires the resource, so Dagster never initializes it and no
Spark session (a JVM, ~6 s to start) is ever created.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial

from dagster import AssetExecutionContext
from dagster_pyspark import PySparkResource
from dagster_pyspark.resources import spark_session_from_config
from pyspark.sql import SparkSession

from crypto_assets.batch.minute_ingest import IngestResult, ingest_window
from crypto_assets.batch.pipeline import POLARS, BatchEngine
from crypto_assets.settings import Settings
from crypto_assets.spark.engine import SparkEngine
from crypto_assets.spark.ingest import spark_ingest_window

RESOURCE_KEY = "pyspark"
FORWARDED_AWS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
APP_NAME = "crypto-assets-batch"


def uses_spark(settings: Settings) -> bool:
    return settings.spark.engine == "spark"


def spark_config(settings: Settings) -> dict[str, str]:
    """Session settings: the configured master and shuffle width, quiet logs, no web UI, UTC session time."""
    spark = settings.spark
    config = {
        "spark.master": spark.master,
        "spark.app.name": APP_NAME,
        "spark.driver.memory": spark.driver_memory,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "ERROR",
    }
    if spark.master.startswith("local"):
        # Nothing outside this machine needs to reach a local driver.
        config |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    if settings.remote_lake:
        # Executors read and write an s3:// lake themselves: they get the driver's endpoint and region. Never
        # its credentials, which executors take from their own environment or role.
        config |= {f"spark.executorEnv.{name}": os.environ[name] for name in FORWARDED_AWS if os.environ.get(name)}
    return config


def python_for_workers() -> None:
    """Python tasks (the Spark ingest's readers) run this interpreter, which has the project installed, unless
    ``PYSPARK_PYTHON`` names another (as a cluster whose executors have their own environment needs)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def pyspark_resource(settings: Settings) -> PySparkResource:
    python_for_workers()
    return PySparkResource(spark_config=spark_config(settings))


def start_session(settings: Settings) -> SparkSession:
    """The resource's session for code outside Dagster (benchmarks, tests), built the way the resource does."""
    python_for_workers()
    return spark_session_from_config(spark_config(settings))


def engine_resource_keys(settings: Settings) -> set[str]:
    """Resource keys the engine-run batch assets need besides ``market``."""
    return {RESOURCE_KEY} if uses_spark(settings) else set()


def engine_kinds(settings: Settings) -> set[str]:
    return {settings.spark.engine, "parquet"}


def minute_ingest(settings: Settings, context: AssetExecutionContext) -> Callable[..., IngestResult]:
    """How ``minute_raw`` merges its window: in this process with Polars, or spread over the Spark session."""
    if not uses_spark(settings):
        return ingest_window
    return partial(spark_ingest_window, getattr(context.resources, RESOURCE_KEY).spark_session)


def batch_engine(settings: Settings, context: AssetExecutionContext) -> BatchEngine:
    """The engine a batch asset runs its step on: Spark on the ``pyspark`` resource's session, else Polars."""
    if not uses_spark(settings):
        return POLARS
    return SparkEngine(getattr(context.resources, RESOURCE_KEY).spark_session)
