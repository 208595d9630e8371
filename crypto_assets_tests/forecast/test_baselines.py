"""Known answers for the baselines through the CV + metrics path."""

import math
from datetime import date

import numpy as np
import polars as pl
import pytest

from crypto_assets.forecast.baselines import drift, naive
from crypto_assets.forecast.cross_validation import cross_validate
from crypto_assets.forecast.options import ForecastOptions

from .conftest import make_history

BASELINES_ONLY = ("naive", "drift")
OPTS = ForecastOptions(
    models=BASELINES_ONLY,
    cv_initial_days=60,
    cv_period_days=5,
    cv_max_cutoffs=None,
    cv_horizons=(1, 7, 30),
    cv_workers=1,
)


def _by(metrics: pl.DataFrame) -> dict[tuple[str, int], dict]:
    return {(r["model"], r["horizon"]): r for r in metrics.iter_rows(named=True)}


def test_constant_series_is_forecast_exactly() -> None:
    result = cross_validate(make_history(np.full(300, 42.0)), OPTS)
    m = _by(result.metrics)
    for model in BASELINES_ONLY:
        for h in OPTS.cv_horizons:
            row = m[(model, h)]
            assert row["mae"] == 0.0 and row["mape"] == 0.0 and row["rmse"] == 0.0
            # 1 - 0/0 is undefined.
            assert row["skill"] is None


def test_linear_trend_drift_exact_naive_lags_by_b_h() -> None:
    a, b = 1000.0, 2.5
    y = a + b * np.arange(400)
    result = cross_validate(make_history(y), OPTS)
    m = _by(result.metrics)
    for h in OPTS.cv_horizons:
        assert m[("drift", h)]["mae"] == pytest.approx(0.0, abs=1e-9)
        assert m[("naive", h)]["mae"] == pytest.approx(b * h, rel=1e-12)
        assert m[("naive", h)]["rmse"] == pytest.approx(b * h, rel=1e-12)
        assert m[("drift", h)]["skill"] == pytest.approx(1.0)
        # MAPE: the naive error b*h over the actual a + b*(t_cut + h), averaged over the cut-offs.
        cut_t = np.array(
            [
                (c - date(2020, 1, 1)).days
                for c in result.predictions.filter((pl.col("model") == "naive") & (pl.col("horizon") == h))["cutoff"]
            ]
        )
        assert m[("naive", h)]["mape"] == pytest.approx(np.mean(b * h / (a + b * (cut_t + h))), rel=1e-12)


def test_random_walk_naive_mae_grows_like_sqrt_h() -> None:
    sigma = 1.0
    rng = np.random.default_rng(20240601)
    # Offset keeps prices far from 0 so MAPE (and skill) stay defined.
    y = 10_000.0 + np.cumsum(rng.normal(0.0, sigma, 6_000))
    opts = ForecastOptions(
        models=BASELINES_ONLY,
        horizon_days=7,
        cv_initial_days=100,
        cv_period_days=3,
        cv_max_cutoffs=None,
        cv_horizons=(1, 7),
        cv_workers=1,
        vol_window_days=500,
    )
    result = cross_validate(make_history(y), opts)
    m = _by(result.metrics)
    assert m[("naive", 1)]["n"] > 1900
    for h in opts.cv_horizons:
        expected = sigma * math.sqrt(2 * h / math.pi)  # E|N(0, sigma^2 h)|
        assert m[("naive", h)]["mae"] == pytest.approx(expected, rel=0.08)
        # Conformal intervals, honestly measured (each origin calibrated on earlier folds): close to the level.
        assert m[("naive", h)]["coverage_80"] == pytest.approx(0.8, abs=0.03)
        assert m[("naive", h)]["coverage_95"] == pytest.approx(0.95, abs=0.02)
        assert m[("naive", h)]["skill"] == 0.0
        # A driftless walk: the drift forecast is naive plus a slope near zero, so it errs alike and covers alike.
        assert m[("drift", h)]["mae"] == pytest.approx(expected, rel=0.08)
        assert m[("drift", h)]["coverage_80"] == pytest.approx(0.8, abs=0.04)
        assert abs(m[("drift", h)]["skill"]) < 0.05
        # Naive is served: drift's skill interval does not lie above 0.
        assert m[("naive", h)]["served"] and m[("drift", h)]["skill_lo"] <= 0


def test_interval_formulas() -> None:
    y = np.array([10.0, 12.0, 11.0, 14.0, 13.0])  # diffs 2, -1, 3, -1
    z = 1.0
    n = naive(y, np.array([4]), [1, 4], z)
    sigma = math.sqrt((4 + 1 + 9 + 1) / 4)
    assert n.yhat[0].tolist() == [13.0, 13.0]
    assert n.upper[0] - n.yhat[0] == pytest.approx([sigma, 2 * sigma])

    d = drift(y, np.array([4]), [1, 4], z)
    slope = (13.0 - 10.0) / 4
    sd = np.std([2, -1, 3, -1], ddof=1)
    assert d.yhat[0] == pytest.approx([13.0 + slope, 13.0 + 4 * slope])
    assert d.upper[0, 1] - d.yhat[0, 1] == pytest.approx(sd * math.sqrt(4 * (1 + 4 / 5)))
