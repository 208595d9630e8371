"""Prophet through forecast, CV (2 spawn workers), results writers and chart."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.forecast.charts import metrics_markdown, write_forecast_chart
from crypto_assets.forecast.cross_validation import CVResult, cross_validate
from crypto_assets.forecast.model import forecast
from crypto_assets.forecast.options import ForecastOptions
from crypto_assets.forecast.results import actual_vs_predicted, write_csv, write_parquet

from .conftest import make_daily_filled, make_history, synthetic_prices

N_DAYS = 400
OPTS = ForecastOptions(
    horizon_days=14,
    yearly_seasonality=False,  # a year of data cannot identify it; also keeps fits fast
    cv_initial_days=300,
    cv_period_days=20,
    cv_max_cutoffs=4,
    cv_workers=2,
    uncertainty_samples=100,
)


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return make_history(synthetic_prices(N_DAYS), symbol="SYNUSDT")


@pytest.fixture(scope="module")
def cv(history: pl.DataFrame) -> CVResult:
    return cross_validate(history, OPTS)


@pytest.fixture(scope="module")
def fc(history: pl.DataFrame) -> pl.DataFrame:
    return forecast(history, OPTS, include_history=True)


def test_forecast_shape_and_interval_order(history: pl.DataFrame, fc: pl.DataFrame) -> None:
    future = fc.filter(pl.col("is_forecast"))
    assert future.height == OPTS.horizon_days
    assert fc.height == N_DAYS + OPTS.horizon_days
    assert future["ds"].min() == history["ds"].max() + timedelta(days=1)
    assert future["ds"].diff().drop_nulls().dt.total_days().to_list() == [1] * (
        OPTS.horizon_days - 1
    )
    assert (fc["yhat_lower"] <= fc["yhat"]).all() and (fc["yhat"] <= fc["yhat_upper"]).all()
    assert fc["symbol"].unique().to_list() == ["SYNUSDT"]
    # Back-transformed from log space: positive, and near the recent price level.
    assert (future["yhat_lower"] > 0).all()
    assert future["yhat"][0] == pytest.approx(history["y"][-1], rel=0.2)


def test_forecast_future_only_by_default(history: pl.DataFrame) -> None:
    out = forecast(history, replace(OPTS, horizon_days=3))
    assert out.height == 3 and out["is_forecast"].all()


def test_cv_same_cutoffs_and_targets_for_every_model(cv: CVResult) -> None:
    pred = cv.predictions
    keys = {
        model: set(part.select("cutoff", "horizon", "ds").iter_rows())
        for (model,), part in pred.partition_by("model", as_dict=True).items()
    }
    assert set(keys) == {"prophet", "naive", "drift"}
    assert keys["prophet"] == keys["naive"] == keys["drift"]
    assert len(keys["prophet"]) == OPTS.cv_max_cutoffs * len(OPTS.cv_horizons)


def test_cv_no_target_leaks_into_training(cv: CVResult) -> None:
    pred = cv.predictions
    # train_end is what each model actually trained on (Prophet: model.history max ds).
    assert (pred["train_end"] == pred["cutoff"]).all()
    assert (pred["train_end"] < pred["ds"]).all()
    assert ((pred["ds"] - pred["cutoff"]).dt.total_days() == pred["horizon"]).all()


def test_cv_metrics_complete_and_finite(cv: CVResult) -> None:
    m = cv.metrics
    assert m.height == 3 * len(OPTS.cv_horizons)
    for col in ("mae", "rmse", "mape", "coverage"):
        assert m[col].is_finite().all()
    p = cv.predictions.filter(pl.col("model") == "prophet")
    assert (p["yhat_lower"] <= p["yhat"]).all() and (p["yhat"] <= p["yhat_upper"]).all()


def test_results_table_and_writers(tmp_path: Path, history: pl.DataFrame, fc: pl.DataFrame) -> None:
    res = actual_vs_predicted(history, fc)
    assert res.columns == ["symbol", "ds", "y", "yhat", "yhat_lower", "yhat_upper", "is_forecast"]
    assert res.height == N_DAYS + OPTS.horizon_days
    assert res.filter(pl.col("is_forecast"))["y"].null_count() == OPTS.horizon_days
    assert res.filter(~pl.col("is_forecast"))["y"].null_count() == 0

    pq = write_parquet(res, tmp_path / "out" / "forecast_results.parquet")
    csv = write_csv(res, tmp_path / "out" / "forecast_results.csv")
    assert pl.read_parquet(pq).equals(res)
    assert pl.read_csv(csv, try_parse_dates=True).height == res.height
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "forecast_results.csv",
        "forecast_results.parquet",
    ]  # no temp files left behind


def test_chart_html_and_markdown(
    tmp_path: Path, history: pl.DataFrame, fc: pl.DataFrame, cv: CVResult
) -> None:
    path = write_forecast_chart(
        tmp_path / "SYNUSDT.html", "SYNUSDT", make_daily_filled(history), fc, cv.metrics
    )
    html = path.read_text(encoding="utf-8")
    assert "plotly" in html and "<html" in html
    assert '<script src="http' not in html  # plotly.js inlined: no network at view time
    md = metrics_markdown(cv.metrics, "SYNUSDT")
    lines = md.splitlines()
    assert lines[0].startswith("| horizon | prophet MAPE | naive MAPE | drift MAPE")
    assert len(lines) == 2 + len(OPTS.cv_horizons)
