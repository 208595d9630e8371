"""The forecast graph with the lake on S3: it reads prophet_input from the bucket and stores its forecasts,
metrics and results there, each object whole."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from crypto_assets.asset_names import FORECAST_METRICS, FORECAST_RESULTS, FORECASTS
from crypto_assets.forecast.store import symbol_file
from crypto_assets.settings import load_settings
from crypto_assets_tests.forecast.test_dagster_assets import run_graph, served_rows, write_daily_lake

pytestmark = pytest.mark.slow  # cross-validates every candidate model


def test_forecasts_of_an_s3_lake_are_stored_in_the_bucket(project_home, s3_lake, tmp_path):
    home = project_home()
    settings = load_settings()
    lake = settings.lake_dir
    walk = np.exp(10.0 + np.cumsum(np.random.default_rng(3).normal(0.0, 0.02, 500)))
    write_daily_lake(lake, {"BTCUSDT": (date(2023, 1, 2), walk), "ETHUSDT": (date(2023, 1, 2), walk)})

    instance_cm, _, result = run_graph(home, tmp_path / "dagster", "BTCUSDT")
    try:
        assert result.success
    finally:
        instance_cm.__exit__(None, None, None)
    assert not (home / "lake").exists()
    metrics = pl.read_parquet(f"{s3_lake}/{FORECAST_METRICS}/symbol=BTCUSDT/part-0.parquet")
    assert set(served_rows(metrics)) == {1, 7, 30}
    for dataset in (FORECASTS, FORECAST_RESULTS):
        assert symbol_file(lake, dataset, "BTCUSDT").exists(), dataset
    assert pl.read_parquet(str(symbol_file(lake, FORECASTS, "BTCUSDT"))).height > 0
