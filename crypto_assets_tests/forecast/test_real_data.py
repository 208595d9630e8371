"""BTCUSDT daily history, default options: fit, forecast and CV end to end (~25 s)."""

import polars as pl

from crypto_assets.forecast.cross_validation import cross_validate
from crypto_assets.forecast.model import forecast
from crypto_assets.forecast.options import ForecastOptions


def test_btcusdt_fit_and_cv_default_options(btc_history: pl.DataFrame) -> None:
    opts = ForecastOptions()
    fc = forecast(btc_history, opts)
    assert fc.height == opts.horizon_days
    assert (fc["yhat_lower"] <= fc["yhat"]).all() and (fc["yhat"] <= fc["yhat_upper"]).all()

    result = cross_validate(btc_history, opts)
    m = result.metrics
    assert set(m["model"]) == {"prophet", "naive", "drift"}
    for model in ("prophet", "naive", "drift"):
        assert sorted(m.filter(pl.col("model") == model)["horizon"]) == list(opts.cv_horizons)
    assert (m["n"] == opts.cv_max_cutoffs).all()
    for col in ("mae", "rmse", "mape", "coverage", "skill"):
        assert m[col].is_finite().all(), col
    assert (m.filter(pl.col("model") == "naive")["skill"] == 0).all()
    # Targets stay inside the observed history, trained strictly before them.
    pred = result.predictions
    assert pred["ds"].max() <= btc_history["ds"].max()
    assert (pred["train_end"] < pred["ds"]).all()
