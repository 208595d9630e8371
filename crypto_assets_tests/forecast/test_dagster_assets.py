"""The forecast graph through a real Dagster instance: champion selection and calibration on series whose right
answer is known (a random walk: naive; a strong weekly pattern: a seasonal model), the skip on a too short history,
and the report on the real BTCUSDT daily history."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, materialize

from crypto_assets.asset_names import FORECAST_METRICS, FORECAST_RESULTS, FORECASTS
from crypto_assets.batch.assets import build_batch_assets
from crypto_assets.batch.engine import BATCH_ENGINE_KEY, BatchEngineResource
from crypto_assets.forecast.assets import build_forecast_assets
from crypto_assets.forecast.candidates import AUTO_ARIMA, AUTO_ETS, PROPHET
from crypto_assets.forecast.store import symbol_file
from crypto_assets.resources import MarketDataResource
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at
from crypto_assets_tests.forecast.daily_lake import read_closes
from crypto_assets_tests.forecast.daily_lake import write_daily_lake as write_lake

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# Models that can express a weekly pattern (when their seasonality is on).
SEASONAL_MODELS = (PROPHET, AUTO_ETS, AUTO_ARIMA)
FORECAST_ASSETS = ["forecast_metrics", "forecasts", "forecast_results"]
CHECKS = {"mape_1d_below_threshold", "not_worse_than_naive", "interval_coverage"}


def write_daily_lake(lake: Path, closes: dict[str, tuple[date, np.ndarray]]) -> None:
    write_lake(lake, closes, SYMBOLS)


def run_graph(home: Path, dagster_dir: Path, symbol: str, config: dict | None = None):
    settings = load_settings()
    dagster_dir.mkdir(exist_ok=True)
    instance_cm = instance_at(dagster_dir)
    instance = instance_cm.__enter__()
    result = materialize(
        build_batch_assets(settings) + build_forecast_assets(settings),
        selection=FORECAST_ASSETS,
        partition_key=symbol,
        instance=instance,
        resources={"market": MarketDataResource(home=str(home)), BATCH_ENGINE_KEY: BatchEngineResource()},
        run_config={"ops": {name: {"config": config} for name in ("forecast_metrics", "forecasts")}}
        if config
        else None,
    )
    return instance_cm, instance, result


def served_rows(metrics: pl.DataFrame, horizons=(1, 7, 30)) -> dict[int, dict]:
    return {
        r["horizon"]: r
        for r in metrics.filter(pl.col("served") & pl.col("horizon").is_in(list(horizons))).iter_rows(named=True)
    }


@pytest.fixture(scope="module")
def known_answers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """BTCUSDT: a random walk on log price; ETHUSDT: the same kind of walk, far quieter, under a 4% weekly pattern."""
    rng = np.random.default_rng(11)
    n = 700
    t = np.arange(n)
    walk = np.exp(10.0 + np.cumsum(rng.normal(0.0, 0.02, n)))
    weekly = np.exp(
        7.0 + np.cumsum(rng.normal(0.0, 0.002, n)) + 0.04 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 0.002, n)
    )
    return {"BTCUSDT": (date(2023, 1, 2), walk), "ETHUSDT": (date(2023, 1, 2), weekly)}


@pytest.fixture
def synthetic_home(project_home, known_answers) -> Path:
    home = project_home()
    write_daily_lake(home / "lake", known_answers)
    return home


@pytest.mark.integration  # Prophet's Stan fits and the cross-validation process pool
def test_random_walk_serves_naive_with_calibrated_intervals(synthetic_home: Path, tmp_path: Path) -> None:
    cm, instance, result = run_graph(synthetic_home, tmp_path / "dagster", "BTCUSDT")
    with cm:
        assert result.success
        assert {e.check_name for e in result.get_asset_check_evaluations()} == CHECKS
        metrics = pl.read_parquet(symbol_file(synthetic_home / "lake", FORECAST_METRICS, "BTCUSDT"))
        served = served_rows(metrics)
        # Nothing predicts a random walk better than its last value: naive must be served at every horizon.
        assert {h: r["model"] for h, r in served.items()} == {1: "naive", 7: "naive", 30: "naive"}
        # Conformal intervals on a walk with constant volatility: honest CV coverage near the level. One horizon's
        # figure rests on ~33 origins (binomial sd ~7 points at 80%), so the bound per horizon is loose and the
        # mean over the 30 days ahead is held to 4 points.
        naive = metrics.filter(pl.col("model") == "naive")
        assert abs(naive["coverage_80"].mean() - 0.8) <= 0.04 and abs(naive["coverage_95"].mean() - 0.95) <= 0.03
        assert all(abs(r["coverage_80"] - 0.8) <= 0.2 for r in served.values())
        event = instance.get_latest_materialization_event(AssetKey("forecast_metrics")).asset_materialization
        assert event.metadata["cutoffs"].value == 53 and event.metadata["short_history"].value is False
        assert "naive" in event.metadata["served"].value
        fc = pl.read_parquet(symbol_file(synthetic_home / "lake", FORECASTS, "BTCUSDT"))
        assert set(fc["model"]) == {"prophet", "naive", "drift", "auto_ets"}
        assert fc.filter(pl.col("served"))["model"].unique().to_list() == ["naive"]


@pytest.mark.integration  # Prophet's Stan fits and the cross-validation process pool
def test_weekly_seasonal_series_serves_a_seasonal_model(synthetic_home: Path, tmp_path: Path) -> None:
    cm, instance, result = run_graph(synthetic_home, tmp_path / "dagster", "ETHUSDT")
    with cm:
        assert result.success
        metrics = pl.read_parquet(symbol_file(synthetic_home / "lake", FORECAST_METRICS, "ETHUSDT"))
        served = served_rows(metrics)
        # A day ahead the weekly pattern dominates the move: a seasonal model wins, with a skill interval above 0.
        assert served[1]["model"] in SEASONAL_MODELS and served[1]["skill_lo"] > 0.3
        assert served[30]["model"] in SEASONAL_MODELS  # 30 days = 4 weeks + 2 days: the pattern still matters
        champion = metrics.filter(pl.col("model") == served[1]["model"])
        assert abs(champion["coverage_80"].mean() - 0.8) <= 0.06 and abs(champion["coverage_95"].mean() - 0.95) <= 0.05
        results = pl.read_parquet(symbol_file(synthetic_home / "lake", FORECAST_RESULTS, "ETHUSDT"))
        future = results.filter(pl.col("is_forecast"))
        assert future.height == 30 and future["model"][0] == served[1]["model"]
        assert (future["lower_95"] <= future["lower_80"]).all() and (future["lower_80"] <= future["yhat"]).all()
        assert (future["yhat"] <= future["upper_80"]).all() and (future["upper_80"] <= future["upper_95"]).all()
        assert future["prophet_yhat"].null_count() == 0 and future["naive_yhat"].null_count() == 0


@pytest.mark.integration  # Prophet's Stan fits and the cross-validation process pool
def test_short_history_adapts_and_too_short_skips_the_whole_group(project_home, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    home = project_home()
    # BTCUSDT: 400 days, fewer origins than a year's; ETHUSDT: 250 days, too few for any CV.
    write_daily_lake(
        home / "lake",
        {
            "BTCUSDT": (date(2024, 1, 1), np.exp(10 + np.cumsum(rng.normal(0, 0.02, 400)))),
            "ETHUSDT": (date(2024, 1, 1), np.exp(7 + np.cumsum(rng.normal(0, 0.02, 250)))),
        },
    )
    cm, instance, result = run_graph(home, tmp_path / "dagster", "ETHUSDT")
    with cm:
        assert result.success
        for key in FORECAST_ASSETS:
            assert instance.get_materialized_partitions(AssetKey(key)) == set(), key
        # The checks carry the reason to the asset's page in the UI.
        skipped = result.get_asset_check_evaluations()
        assert {e.check_name for e in skipped} == CHECKS
        assert all(not e.passed and "skipped: 250 days of history are too few" in e.description for e in skipped)
        assert not symbol_file(home / "lake", FORECASTS, "ETHUSDT").exists()

        # What `demo` and `up` run: every symbol with enough history, the others skipped with the reason.
        from crypto_assets.forecast.runs import days_needed, materialize_forecasts

        runs = {run.symbol: run for run in materialize_forecasts(instance, load_settings())}
        assert runs["BTCUSDT"].success is True and runs["BTCUSDT"].note == "run succeeded"
        assert {name for name, _ in runs["BTCUSDT"].checks} == CHECKS
        assert runs["ETHUSDT"].success is None and f"needs {days_needed()}" in runs["ETHUSDT"].note
        event = instance.get_latest_materialization_event(AssetKey("forecast_metrics")).asset_materialization
        assert event.metadata["short_history"].value is True
        assert event.metadata["cutoffs"].value < 53 and "short history" in event.metadata["cv_note"].value
        assert instance.get_materialized_partitions(AssetKey("forecast_results")) == {"BTCUSDT"}


@pytest.mark.integration  # Prophet's Stan fits and the cross-validation process pool
def test_report_on_real_daily_history(shared_data: Path, project_home, tmp_path: Path) -> None:
    home = project_home()
    write_daily_lake(home / "lake", {s: read_closes(shared_data / "binance_spot_1d" / f"{s}_1d.csv") for s in SYMBOLS})
    # 12 origins keep the run short; the full CV runs in test_real_data's backtest.
    cm, instance, result = run_graph(home, tmp_path / "dagster", "BTCUSDT", {"cv_max_cutoffs": 12})
    with cm:
        assert result.success
        results = instance.get_latest_materialization_event(AssetKey("forecast_results")).asset_materialization
        chart = Path(results.metadata["chart_path"].value)
        assert chart == home / "reports" / "forecast_BTCUSDT.html"
        assert results.metadata["chart"].value == f"http://127.0.0.1:3001/{chart.name}"
        html = chart.read_text()
        for trace in (
            '"name":"close"',
            '"name":"served: ',
            '"name":"80% interval"',
            '"name":"95% interval"',
            '"name":"Prophet"',
            '"name":"naive"',
            '"name":"actual (CV period)"',
            '"name":"predicted 1d ahead',
            '"name":"predicted 30d ahead',
            "skill vs naive [95% CI]",
        ):
            assert trace in html, trace
        preview = results.metadata["chart_preview"].value
        assert base64.b64decode(preview.split(",", 1)[1].rstrip(")")).startswith(b"\x89PNG")
        assert "skill vs naive" in results.metadata["preview"].value
        parquet = pl.read_parquet(symbol_file(home / "lake", FORECAST_RESULTS, "BTCUSDT"))
        future = parquet.filter(pl.col("is_forecast"))
        assert future.height == 30 and parquet["y"].null_count() == 30
        # The served forecast starts at the last close (within a few percent), whichever model serves it.
        last_close = parquet.filter(~pl.col("is_forecast"))["y"][-1]
        assert future["yhat"][0] == pytest.approx(last_close, rel=0.05)
        assert future["prophet_yhat"][0] == pytest.approx(last_close, rel=0.05)
