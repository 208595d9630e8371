"""One real Spark session per test module: starting one takes seconds, so a module's tests share it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from crypto_assets.settings import DEFAULT_SYMBOLS, Settings
from crypto_assets_tests.spark.session import start_session


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    # The batch engine's own session settings (local[*], UTC, no UI); Dagster runs in the module reuse it.
    already_running = SparkSession.getActiveSession()
    session = start_session(Settings(home=Path(tmp_path_factory.mktemp("spark_home")), symbols=DEFAULT_SYMBOLS))
    yield session
    if already_running is None:  # stop only what this module started
        session.stop()
