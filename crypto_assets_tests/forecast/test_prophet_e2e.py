"""Every candidate through CV (2 spawn workers), the served forecast, the results writers and the chart."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.forecast.charts import metrics_markdown, write_forecast_chart
from crypto_assets.forecast.cross_validation import CVResult, cross_validate
from crypto_assets.forecast.model import anchored_path
from crypto_assets.forecast.options import ForecastOptions
from crypto_assets.forecast.results import RESULTS_SCHEMA, actual_vs_predicted, write_csv, write_parquet
from crypto_assets.forecast.served import forecast_all, served_path

from .conftest import make_daily_filled, make_history, synthetic_prices

pytestmark = pytest.mark.integration  # Prophet's Stan fits and the cross-validation process pool

N_DAYS = 400
OPTS = ForecastOptions(horizon_days=14, cv_horizons=(1, 7, 14), cv_max_cutoffs=12, cv_min_cutoffs=12, cv_workers=2)
MODELS = {"prophet", "naive", "drift", "auto_ets"}


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return make_history(synthetic_prices(N_DAYS), symbol="SYNUSDT")


@pytest.fixture(scope="module")
def cv(history: pl.DataFrame) -> CVResult:
    return cross_validate(history, OPTS)


@pytest.fixture(scope="module")
def fc(history: pl.DataFrame, cv: CVResult) -> pl.DataFrame:
    return forecast_all(history, cv.metrics, OPTS)[0]


def test_cv_same_origins_and_targets_for_every_model(cv: CVResult) -> None:
    keys = {
        model: set(part.select("cutoff", "horizon", "ds", "y").iter_rows())
        for (model,), part in cv.predictions.partition_by("model", as_dict=True).items()
    }
    assert set(keys) == MODELS
    assert len({frozenset(k) for k in keys.values()}) == 1
    assert len(keys["prophet"]) == OPTS.cv_max_cutoffs * OPTS.horizon_days
    cutoffs = cv.predictions["cutoff"].unique().sort()
    assert (cutoffs.diff().drop_nulls().dt.total_days() == 7).all()
    assert not cv.short_history and cv.errors == ()


def test_metrics_complete_with_skill_intervals(cv: CVResult) -> None:
    m = cv.metrics
    assert m.height == len(MODELS) * OPTS.horizon_days
    for col in ("mae", "rmse", "mape", "q_80", "q_95"):
        assert m[col].is_finite().all(), col
    others = m.filter(pl.col("model") != "naive")
    assert (others["skill_lo"] <= others["skill"]).all() and (others["skill"] <= others["skill_hi"]).all()
    assert (m["q_80"] <= m["q_95"]).all()
    # One served model per day ahead, constant within each CV horizon's span.
    served = m.filter(pl.col("served")).sort("horizon")
    assert served["horizon"].to_list() == list(range(1, OPTS.horizon_days + 1))
    assert served.filter(pl.col("horizon").is_between(2, 7))["model"].n_unique() == 1


def test_prophet_starts_at_the_last_close(history: pl.DataFrame) -> None:
    series_ds = history["ds"].to_numpy().astype("datetime64[D]")
    y = history["y"].to_numpy()
    path = anchored_path(series_ds, y, OPTS)
    assert len(path) == OPTS.horizon_days
    assert path[0] == pytest.approx(y[-1], rel=0.03)
    from dataclasses import replace

    unanchored = anchored_path(series_ds, y, replace(OPTS, level_anchor=False))
    assert not np.allclose(unanchored, path)


def test_served_forecast_and_bands(history: pl.DataFrame, fc: pl.DataFrame) -> None:
    assert set(fc["model"]) == MODELS and fc.height == len(MODELS) * OPTS.horizon_days
    served = served_path(fc)
    assert served.height == OPTS.horizon_days
    assert (served["ds"].min() - history["ds"].max()).days == 1
    assert (served["lower_95"] <= served["lower_80"]).all() and (served["lower_80"] <= served["yhat"]).all()
    assert (served["yhat"] <= served["upper_80"]).all() and (served["upper_80"] <= served["upper_95"]).all()
    assert served["yhat"][0] == pytest.approx(history["y"][-1], rel=0.05)


def test_results_table_and_writers(tmp_path: Path, history: pl.DataFrame, fc: pl.DataFrame) -> None:
    res = actual_vs_predicted(history, fc)
    assert res.schema == pl.Schema(RESULTS_SCHEMA)
    assert res.height == N_DAYS + OPTS.horizon_days
    future = res.filter(pl.col("is_forecast"))
    assert future["y"].null_count() == OPTS.horizon_days and future["model"].null_count() == 0
    assert future["prophet_yhat"].null_count() == 0 and future["naive_yhat"].null_count() == 0
    assert res.filter(~pl.col("is_forecast"))["y"].null_count() == 0

    pq = write_parquet(res, tmp_path / "out" / "forecast_results.parquet")
    csv = write_csv(res, tmp_path / "out" / "forecast_results.csv")
    assert pl.read_parquet(pq).equals(res)
    assert pl.read_csv(csv, try_parse_dates=True).height == res.height
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["forecast_results.csv", "forecast_results.parquet"]


def test_chart_html_and_markdown(tmp_path: Path, history: pl.DataFrame, fc: pl.DataFrame, cv: CVResult) -> None:
    path = write_forecast_chart(
        tmp_path / "SYNUSDT.html", "SYNUSDT", make_daily_filled(history), fc, cv.metrics, cv.predictions
    )
    html = path.read_text(encoding="utf-8")
    assert "plotly" in html and "<html" in html
    assert '<script src="http' not in html  # plotly.js inlined: no network at view time
    lines = metrics_markdown(cv.metrics, "SYNUSDT", OPTS.cv_horizons).splitlines()
    assert lines[0].startswith("| horizon | model | CV MAPE | skill vs naive [95% CI]")
    assert len(lines) == 2 + len(MODELS) * len(OPTS.cv_horizons)
