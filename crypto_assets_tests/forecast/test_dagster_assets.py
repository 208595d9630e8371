"""The forecast assets through a real Dagster instance on the real BTCUSDT and ETHUSDT daily history."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, materialize

from crypto_assets.batch.assets import build_batch_assets
from crypto_assets.batch.pipeline import (
    DAILY_RAW,
    build_daily_filled,
    build_prophet_input,
)
from crypto_assets.batch.transforms.daily import DAILY_SCHEMA
from crypto_assets.forecast.assets import build_forecast_assets
from crypto_assets.forecast.store import FORECAST_RESULTS, FORECASTS, symbol_file
from crypto_assets.lake.datasets import write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.resources import MarketDataResource
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
FORECAST_ASSETS = ["forecasts", "forecast_metrics", "forecast_results"]
# Small CV (6 cut-offs) and fewer interval samples keep the run quick; the rest are the defaults.
SMALL = {"horizon_days": 30, "cv_max_cutoffs": 6, "cv_period_days": 60, "uncertainty_samples": 100}


def write_daily_lake(lake: Path, data: Path) -> None:
    """daily_raw months from the real daily CSVs, then daily_filled and prophet_input over the whole range."""
    frames = [
        pl.read_csv(data / f"{symbol}_1d.csv", schema_overrides={"timestamp": pl.String}).select(
            pl.lit(symbol).alias("symbol"),
            pl.col("timestamp").str.slice(0, 10).str.to_date("%Y-%m-%d").alias("date"),
            *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")],
            pl.lit(1440, dtype=pl.UInt32).alias("minute_count"),
        )
        for symbol in SYMBOLS
    ]
    daily = pl.concat(frames).unique(["symbol", "date"], keep="last").sort("symbol", "date").select(DAILY_SCHEMA.names())
    start, end = date(daily["date"].min().year, daily["date"].min().month, 1), date.today().replace(day=1)
    end = date(end.year + (end.month == 12), end.month % 12 + 1, 1)
    months = months_between(start, end)
    write_months(daily, lake, DAILY_RAW, "date", SYMBOLS, months)
    build_daily_filled(lake, SYMBOLS, start, end)
    build_prophet_input(lake, SYMBOLS, start, end)


@pytest.fixture
def home(shared_data: Path, project_home) -> Path:
    home = project_home()
    write_daily_lake(home / "lake", shared_data / "binance_spot_1d")
    return home


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_forecast_assets_materialize_on_real_daily_data(home: Path, symbol: str, tmp_path: Path) -> None:
    settings = load_settings()
    assets = build_batch_assets(settings) + build_forecast_assets(settings)
    (tmp_path / "dagster").mkdir()
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize(
            assets,
            selection=FORECAST_ASSETS,
            partition_key=symbol,
            instance=instance,
            resources={"market": MarketDataResource(home=str(home))},
            run_config={"ops": {"forecasts": {"config": SMALL}, "forecast_metrics": {"config": SMALL}}},
        )
        assert result.success

        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {"mape_1d_below_threshold", "not_worse_than_naive"}
        assert all(e.severity.value == "WARN" for e in checks.values())
        worse = checks["not_worse_than_naive"].metadata
        assert {"worse_than_naive_1d", "worse_than_naive_7d", "worse_than_naive_30d", "per_horizon"} <= set(worse)

        metrics = instance.get_latest_materialization_event(AssetKey("forecast_metrics")).asset_materialization
        assert metrics.partition == symbol
        assert metrics.metadata["cutoffs"].value == 6
        table = metrics.metadata["metrics"].value
        assert "prophet MAPE" in table and "naive MAPE" in table and "drift MAPE" in table
        assert 0 < metrics.metadata["prophet_mape_1d"].value < 1

        lake = home / "lake"
        fc = pl.read_parquet(symbol_file(lake, FORECASTS, symbol)).filter(pl.col("is_forecast"))
        assert fc.height == 30
        assert (fc["yhat_lower"] <= fc["yhat"]).all() and (fc["yhat"] <= fc["yhat_upper"]).all()

        parquet = pl.read_parquet(symbol_file(lake, FORECAST_RESULTS, symbol))
        csv = pl.read_csv(symbol_file(lake, FORECAST_RESULTS, symbol, ".csv"), try_parse_dates=True)
        assert parquet.height == csv.height > 2000 and parquet["is_forecast"].sum() == 30
        assert parquet["y"].null_count() == 30  # actuals everywhere except the forecast days

        results = instance.get_latest_materialization_event(AssetKey("forecast_results")).asset_materialization
        chart = Path(results.metadata["chart_path"].value)
        assert chart == home / "reports" / f"forecast_{symbol}.html"
        assert results.metadata["chart"].value == f"http://127.0.0.1:3001/{chart.name}"
        html = chart.read_text()
        for trace in ('"name":"close"', '"name":"MA7"', '"name":"MA30"', '"name":"forecast"', '"name":"interval"', '"name":"prophet MAPE"', '"name":"naive MAPE"', '"name":"drift MAPE"'):
            assert trace in html, trace
        preview = results.metadata["chart_preview"].value
        assert preview.startswith(f"![{symbol} forecast](data:image/png;base64,")
        assert base64.b64decode(preview.split(",", 1)[1].rstrip(")")).startswith(b"\x89PNG")
        assert "prophet MAPE" in results.metadata["preview"].value


def test_demo_forecasts_every_symbol_with_enough_history_and_skips_the_rest(home: Path, tmp_path: Path) -> None:
    from crypto_assets.forecast.runs import days_needed, materialize_forecasts

    # ETHUSDT loses all but its last 400 days: too few for the default cross-validation.
    eth = home / "lake" / "prophet_input" / "symbol=ETHUSDT"
    for path in sorted(eth.glob("year=*/month=*/part-0.parquet"))[:-13]:
        path.unlink()
    (tmp_path / "dagster").mkdir()
    with instance_at(tmp_path / "dagster") as instance:
        runs = {run.symbol: run for run in materialize_forecasts(instance, load_settings(), config=SMALL)}
        assert runs["BTCUSDT"].success is True and runs["BTCUSDT"].days > days_needed()
        assert {name for name, _ in runs["BTCUSDT"].checks} == {"mape_1d_below_threshold", "not_worse_than_naive"}
        assert runs["ETHUSDT"].success is None and runs["ETHUSDT"].days < days_needed()
        assert f"needs {days_needed()}" in runs["ETHUSDT"].note
        assert instance.get_materialized_partitions(AssetKey("forecast_results")) == {"BTCUSDT"}
