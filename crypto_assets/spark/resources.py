"""The Spark session behind the batch engine: dagster-pyspark's ``PySparkResource`` configured from the settings.

With ``spark.engine = "spark"`` the code location binds :class:`SparkEngineResource` as the batch assets'
``batch_engine``; with ``"polars"`` it binds the Polars engine and no session is ever created.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial

from dagster_pyspark import PySparkResource

from crypto_assets.batch.engine import BatchEngineResource
from crypto_assets.batch.minute_ingest import IngestResult, ingest_window
from crypto_assets.batch.pipeline import BatchEngine
from crypto_assets.settings import Settings
from crypto_assets.spark.engine import SparkEngine
from crypto_assets.spark.ingest import spark_merge

FORWARDED_AWS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
APP_NAME = "crypto-assets-batch"


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


class SparkEngineResource(BatchEngineResource):
    """Runs the batch steps and minute_raw's merge on the session of its ``pyspark`` resource."""

    pyspark: PySparkResource

    def steps(self) -> BatchEngine:
        return SparkEngine(self.pyspark.spark_session)

    def ingest(self) -> Callable[..., IngestResult]:
        return partial(ingest_window, merge=spark_merge(self.pyspark.spark_session))


def batch_engine_resource(settings: Settings) -> BatchEngineResource:
    """The engine ``spark.engine`` chooses: with Polars no Spark session (a JVM, ~6 s to start) is ever created."""
    if settings.spark.engine == "spark":
        return SparkEngineResource(pyspark=pyspark_resource(settings))
    return BatchEngineResource()
