import math

import numpy as np
import polars as pl
import pytest

from crypto_assets.forecast.metrics import (
    coverage,
    flag_mape,
    mae,
    mape,
    rmse,
    summarize,
)


def test_point_metrics_hand_computed() -> None:
    y = np.array([100.0, 200.0, 400.0])
    yhat = np.array([110.0, 180.0, 400.0])
    # errors 10, -20, 0
    assert mae(y, yhat) == pytest.approx(10.0)
    assert rmse(y, yhat) == pytest.approx(math.sqrt(500 / 3))
    assert mape(y, yhat) == pytest.approx((0.1 + 0.1 + 0.0) / 3)


def test_coverage_is_closed_interval() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    lower = np.array([0.0, 2.0, 3.5, 4.0])
    upper = np.array([2.0, 2.0, 5.0, 4.0])
    # inside, on both bounds, below lower, zero-width hit
    assert coverage(y, lower, upper) == pytest.approx(0.75)


def test_mape_rejects_zero_actuals() -> None:
    with pytest.raises(ValueError):
        mape(np.array([0.0, 1.0]), np.array([1.0, 1.0]))


def _predictions() -> pl.DataFrame:
    rows = [
        # model, cutoff, horizon, y, yhat, lower, upper
        ("naive", 0, 1, 100.0, 90.0, 80.0, 100.0),
        ("naive", 1, 1, 200.0, 220.0, 210.0, 230.0),
        ("prophet", 0, 1, 100.0, 95.0, 90.0, 99.0),
        ("prophet", 1, 1, 200.0, 210.0, 190.0, 230.0),
        ("naive", 0, 7, 100.0, 100.0, 100.0, 100.0),
        ("prophet", 0, 7, 100.0, 120.0, 110.0, 130.0),
    ]
    return pl.DataFrame(
        rows,
        schema=["model", "cutoff", "horizon", "y", "yhat", "yhat_lower", "yhat_upper"],
        orient="row",
    )


def test_summarize_matches_hand_computation() -> None:
    m = summarize(_predictions())
    assert m.columns == ["model", "horizon", "n", "mae", "rmse", "mape", "coverage", "skill"]
    get = {(r["model"], r["horizon"]): r for r in m.iter_rows(named=True)}

    naive1 = get[("naive", 1)]
    assert naive1["n"] == 2
    assert naive1["mae"] == pytest.approx(15.0)
    assert naive1["rmse"] == pytest.approx(math.sqrt((100 + 400) / 2))
    assert naive1["mape"] == pytest.approx(0.1)
    assert naive1["coverage"] == pytest.approx(0.5)
    assert naive1["skill"] == pytest.approx(0.0)

    prophet1 = get[("prophet", 1)]
    assert prophet1["mape"] == pytest.approx(0.05)
    assert prophet1["coverage"] == pytest.approx(0.5)
    assert prophet1["skill"] == pytest.approx(1 - 0.05 / 0.1)

    # Naive MAPE is 0 at h=7: skill is undefined, reported as null.
    assert get[("naive", 7)]["coverage"] == 1.0
    assert get[("prophet", 7)]["skill"] is None


def test_flag_mape() -> None:
    m = flag_mape(summarize(_predictions()), 0.07)
    flags = {(r["model"], r["horizon"]): r["mape_warn"] for r in m.iter_rows(named=True)}
    assert flags[("naive", 1)] and not flags[("prophet", 1)] and flags[("prophet", 7)]
