"""A tiny Dagster job that runs the CV process pool inside a step (used by test_dagster_run)."""

from __future__ import annotations

import numpy as np
from dagster import job, op

from crypto_assets.forecast.cross_validation import cross_validate
from crypto_assets.forecast.options import ForecastOptions

from .conftest import make_history, synthetic_prices

OPTS = ForecastOptions(
    horizon_days=7,
    yearly_seasonality=False,
    cv_horizons=(1, 7),
    cv_initial_days=200,
    cv_period_days=15,
    cv_max_cutoffs=2,
    cv_min_cutoffs=2,
    cv_workers=2,
    uncertainty_samples=50,
)


@op
def run_cv() -> float:
    # make_history and the polars group_by run polars work in the step process
    # first: that is what made a fork-started pool deadlock, so the pool that
    # cross_validate starts here must not be forked.
    hist = make_history(synthetic_prices(300))
    assert hist.group_by("symbol").len().height == 1
    result = cross_validate(hist, OPTS)
    mape = result.metrics["mape"].to_numpy()
    if not np.isfinite(mape).all() or result.metrics.height != len(OPTS.models) * OPTS.horizon_days:
        raise ValueError("incomplete CV metrics")
    return float(mape.max())


@job
def cv_job() -> None:
    run_cv()
