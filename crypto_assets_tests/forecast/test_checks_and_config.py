"""The forecast asset checks (pure) and the Dagster config that mirrors ForecastOptions."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from crypto_assets.forecast.checks import interval_coverage, mape_below_threshold, not_worse_than_naive
from crypto_assets.forecast.config import ForecastConfig
from crypto_assets.forecast.options import ForecastOptions
from crypto_assets.quality import Severity


def metrics(prophet: dict[int, float], naive: dict[int, float]) -> pl.DataFrame:
    rows = [("prophet", h, m) for h, m in prophet.items()] + [("naive", h, m) for h, m in naive.items()]
    return pl.DataFrame(rows, schema={"model": pl.String, "horizon": pl.Int32, "mape": pl.Float64}, orient="row")


def test_mape_threshold_warns_above_and_passes_at_or_below() -> None:
    m = metrics({1: 0.03, 7: 0.2}, {1: 0.02, 7: 0.1})
    ok = mape_below_threshold(m, 0.05)
    assert ok.passed and ok.severity == Severity.WARN and ok.metadata["mape"] == 0.03
    assert mape_below_threshold(m, 0.03).passed
    bad = mape_below_threshold(m, 0.02)
    assert not bad.passed and bad.severity == Severity.WARN and "above" in bad.description
    assert not mape_below_threshold(m, 0.05, horizon=30).passed  # no metrics at that horizon


def test_not_worse_than_naive_reports_each_horizon() -> None:
    out = not_worse_than_naive(metrics({1: 0.03, 7: 0.08, 30: 0.2}, {1: 0.02, 7: 0.1, 30: 0.2}))
    assert not out.passed and out.severity == Severity.WARN
    assert out.metadata["worse_than_naive_1d"] is True
    assert out.metadata["worse_than_naive_7d"] is False
    assert out.metadata["worse_than_naive_30d"] is False  # a tie is not worse
    assert "| 1d |" in out.metadata["per_horizon"] and out.description.endswith("1d")
    assert not_worse_than_naive(metrics({1: 0.01}, {1: 0.02})).passed


def test_not_worse_than_naive_judges_the_served_forecast_and_names_a_losing_prophet() -> None:
    m = metrics({1: 0.03, 7: 0.2}, {1: 0.02, 7: 0.1}).with_columns(served=pl.col("model") == "naive")
    out = not_worse_than_naive(m)
    assert out.passed and "Prophet, shown beside it, loses to naive at 1d, 7d" in out.description
    assert out.metadata["prophet_worse_than_naive"] == "1d, 7d"
    served_prophet = m.with_columns(served=pl.col("model") == "prophet")
    assert not not_worse_than_naive(served_prophet).passed


def coverage_metrics(coverage: float, scored: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"model": ["naive"], "horizon": [1], "served": [True], "coverage_80": [coverage], "coverage_n": [scored]}
    )


@pytest.mark.parametrize(
    ("coverage", "scored", "passes"),
    [
        (0.80, 40, True),
        (0.70, 40, True),  # 10 points off on 40 origins: within 5 points plus sampling noise (12.4 points)
        (0.51, 40, False),  # an 80% band covering half the outcomes is off whatever the noise
        (0.70, 2000, False),  # 2,000 origins leave little noise: 10 points is off
        (0.83, 2000, True),
        (None, 0, False),  # not measurable
    ],
)
def test_interval_coverage_allows_the_tolerance_plus_sampling_noise(coverage, scored, passes) -> None:
    out = interval_coverage(coverage_metrics(coverage, scored), (1,), (0.8,), 0.05)
    assert out.passed is passes and out.severity == Severity.WARN
    assert "| 1d | naive | 80% |" in out.metadata["per_horizon"]


def test_config_mirrors_forecast_options() -> None:
    option_fields = {f.name for f in dataclasses.fields(ForecastOptions)} - {"prophet_extra"}
    assert option_fields == set(ForecastConfig.model_fields)
    assert ForecastConfig().to_options() == ForecastOptions()
    small = ForecastConfig(cv_horizons=[1, 7], cv_max_cutoffs=None, horizon_days=7).to_options()
    assert small.cv_horizons == (1, 7) and small.cv_max_cutoffs is None and small.horizon_days == 7
    with pytest.raises(ValueError, match="increasing"):
        ForecastConfig(cv_horizons=[7, 1]).to_options()
