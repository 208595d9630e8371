"""The batch graph on the Spark engine (``local[2]``) with the lake on S3: minute_raw merged and staged by the
executors, the daily steps read by them, and every file the same, byte for byte, as the Polars engine's."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from crypto_assets_tests.object_store.test_batch_graph_on_s3 import local_files, remote_files, run_graph

pytestmark = pytest.mark.slow  # starts a Spark session

SPARK = '[spark]\nengine = "spark"\nmaster = "local[2]"\n'


def test_the_batch_graph_on_spark_with_an_s3_lake_writes_the_polars_engines_files(
    tmp_path, monkeypatch, s3_endpoint, s3_lake
):
    monkeypatch.delenv("CRYPTO_ASSETS_LAKE")
    local_settings, local_checks = run_graph(tmp_path / "polars", tmp_path, monkeypatch, "dagster-polars")
    expected = {k: v for k, v in local_files(local_settings.lake_dir).items() if not k.startswith(".")}

    running = SparkSession.getActiveSession()
    if running is not None:  # executors started before this test's AWS variables could not reach the server
        running.stop()
    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", s3_lake)
    settings, checks = run_graph(tmp_path / "spark", tmp_path, monkeypatch, "dagster-spark", extra=SPARK)
    try:
        assert settings.spark.engine == "spark" and settings.remote_lake
        stored = remote_files(s3_endpoint, s3_lake)
        assert stored.keys() == expected.keys()
        assert [key for key in stored if stored[key] != expected[key]] == []
        assert checks == local_checks
    finally:
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
