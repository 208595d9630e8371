import numpy as np
import pytest

from crypto_assets.forecast.cross_validation import TooShortHistory, cutoff_indices
from crypto_assets.forecast.options import ForecastOptions

from .conftest import make_history


def test_cutoffs_anchored_at_end_spaced_and_capped() -> None:
    opts = ForecastOptions(
        cv_initial_days=100, cv_period_days=10, cv_max_cutoffs=5, cv_min_cutoffs=5, cv_horizons=(1, 7, 30)
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


def test_short_history_gets_fewer_origins_and_too_short_raises() -> None:
    opts = ForecastOptions()  # weekly origins, 53 at most, 12 at least, 180 days of training
    assert len(cutoff_indices(3000, opts)) == 53
    short = cutoff_indices(461, opts)  # the default synthetic history
    assert len(short) == (461 - 1 - 30 - 179) // 7 + 1 and short[0] >= 179
    assert len(cutoff_indices(opts.min_history_days(), opts)) == opts.cv_min_cutoffs
    with pytest.raises(TooShortHistory, match="too few"):
        cutoff_indices(opts.min_history_days() - 1, opts)


def test_fork_context_rejected() -> None:
    with pytest.raises(ValueError, match="fork"):
        ForecastOptions(cv_mp_context="fork")  # type: ignore[arg-type]


@pytest.mark.integration  # Prophet's Stan fits
def test_cv_has_no_look_ahead() -> None:
    """Every fold's predictions depend on the days up to its origin only: wild values after an origin change
    nothing at that origin or before it, for every model (Prophet included)."""
    import polars as pl

    from crypto_assets.forecast.cross_validation import cross_validate

    from .conftest import synthetic_prices

    opts = ForecastOptions(cv_initial_days=150, cv_max_cutoffs=12, cv_min_cutoffs=12, cv_workers=1)
    history = make_history(synthetic_prices(300))
    first = cross_validate(history, opts).predictions
    origin = first["cutoff"].unique().sort()[5]
    poisoned = history.with_columns(pl.when(pl.col("ds") > origin).then(pl.col("y") * 10).otherwise("y").alias("y"))
    second = cross_validate(poisoned, opts).predictions
    keep = pl.col("cutoff") <= origin
    assert first.filter(keep).drop("y").equals(second.filter(keep).drop("y"))
    assert not first.filter(~keep).drop("y").equals(second.filter(~keep).drop("y"))  # the test can fail
    assert (first["train_end"] == first["cutoff"]).all() and (first["ds"] > first["train_end"]).all()
