from datetime import timedelta
from itertools import pairwise

import numpy as np
import pytest

from crypto_assets.forecast.cross_validation import cutoff_indices, make_cutoffs
from crypto_assets.forecast.options import ForecastOptions

from .conftest import make_history


def test_cutoffs_anchored_at_end_spaced_and_capped() -> None:
    opts = ForecastOptions(
        cv_initial_days=100, cv_period_days=10, cv_max_cutoffs=5, cv_horizons=(1, 7, 30)
    )
    idx = cutoff_indices(400, opts)
    # Latest cut-off still has its 30-day target inside the data.
    assert idx[-1] == 400 - 1 - 30
    assert np.all(np.diff(idx) == 10)
    assert len(idx) == 5


def test_cutoffs_respect_initial_window_when_uncapped() -> None:
    opts = ForecastOptions(cv_initial_days=100, cv_period_days=10, cv_max_cutoffs=None)
    idx = cutoff_indices(400, opts)
    assert idx[0] >= 99 and idx[0] - 10 < 99  # first fold trains on >= 100 rows
    assert idx[-1] == 369


def test_make_cutoffs_returns_dates() -> None:
    hist = make_history(np.ones(200))
    opts = ForecastOptions(cv_initial_days=50, cv_period_days=20, cv_max_cutoffs=3)
    cutoffs = make_cutoffs(hist, opts)
    assert [b - a for a, b in pairwise(cutoffs)] == [timedelta(days=20)] * 2
    assert cutoffs[-1] + timedelta(days=30) == hist["ds"].max()


def test_too_short_history_raises() -> None:
    with pytest.raises(ValueError, match="too few"):
        cutoff_indices(100, ForecastOptions(cv_initial_days=80))


def test_fork_context_rejected() -> None:
    with pytest.raises(ValueError, match="fork"):
        ForecastOptions(cv_mp_context="fork")  # type: ignore[arg-type]
