"""Settings shared by the forecasting functions (model, baselines, CV)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

# No "fork": cmdstanpy parses Stan's output with polars, and a forked child of
# a process whose polars thread pool has run deadlocks inside rayon (seen here
# with polars 2.1 / cmdstanpy 1.3: workers hang on their first fit).
MpContext = Literal["spawn", "forkserver"]


@dataclass(frozen=True)
class ForecastOptions:
    # Forecast
    horizon_days: int = 30
    # Fit on log(y) and back-transform with exp: prices are multiplicative, and
    # the exp keeps forecasts and intervals positive.
    log_price: bool = True

    # Prophet
    changepoint_prior_scale: float = 0.05
    # Prophet's default, 0.8, puts no changepoint in the last ~1.5 years of a crypto history, so the trend
    # lags the price; 0.95 lowered CV MAPE at every horizon on both symbols (bench/forecast_bench.py).
    changepoint_range: float = 0.95
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    yearly_seasonality: bool = True
    weekly_seasonality: bool = True
    daily_seasonality: bool = False
    interval_width: float = 0.8
    # Prophet's default is 1000; 300 keeps the 10%/90% quantiles stable while
    # making predict() on a full history about 4x cheaper.
    uncertainty_samples: int = 300
    # Prophet draws its interval samples from numpy's global RNG; a seed keeps
    # intervals (and so coverage) reproducible. None leaves the RNG alone.
    random_seed: int | None = 0

    # Rolling-origin cross-validation
    cv_horizons: tuple[int, ...] = (1, 7, 30)
    cv_initial_days: int = 730
    cv_period_days: int = 30
    # Each cut-off is a full Prophet fit (~1.5-2 s of L-BFGS on ~2,600 days), so
    # this is the cost lever: BTC+ETH with 24 took ~41 s on an otherwise quiet
    # 2-core box (~94 s when another job held a core); 12 takes ~27 s.
    cv_max_cutoffs: int | None = 24
    cv_workers: int = 2
    # Workers start from a fresh interpreter (see MpContext). "spawn" costs about
    # 2-3 s of imports per pool; share a pool across symbols (make_executor).
    cv_mp_context: MpContext = "spawn"

    mape_warn_threshold: float = 0.05

    # Free-form extra Prophet constructor arguments (e.g. n_changepoints).
    prophet_extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.horizon_days < 1:
            raise ValueError("horizon_days must be >= 1")
        if not 0.0 < self.interval_width < 1.0:
            raise ValueError("interval_width must be in (0, 1)")
        if not self.cv_horizons or min(self.cv_horizons) < 1:
            raise ValueError("cv_horizons must be non-empty positive day counts")
        if tuple(sorted(set(self.cv_horizons))) != tuple(self.cv_horizons):
            raise ValueError("cv_horizons must be strictly increasing")
        if self.cv_initial_days < 2 or self.cv_period_days < 1:
            raise ValueError("cv_initial_days must be >= 2 and cv_period_days >= 1")
        if self.cv_max_cutoffs is not None and self.cv_max_cutoffs < 1:
            raise ValueError("cv_max_cutoffs must be >= 1 or None")
        if self.cv_workers < 1:
            raise ValueError("cv_workers must be >= 1")
        if self.cv_mp_context not in ("spawn", "forkserver"):
            raise ValueError("cv_mp_context must be 'spawn' or 'forkserver' (fork deadlocks)")
        if self.uncertainty_samples < 1:
            # Intervals are part of the output contract (and of coverage).
            raise ValueError("uncertainty_samples must be >= 1")

    @property
    def z(self) -> float:
        """Two-sided normal quantile matching interval_width (1.2816 for 0.8)."""
        return NormalDist().inv_cdf(0.5 + self.interval_width / 2.0)

    def prophet_kwargs(self) -> dict[str, Any]:
        return {
            "changepoint_prior_scale": self.changepoint_prior_scale,
            "changepoint_range": self.changepoint_range,
            "seasonality_mode": self.seasonality_mode,
            "yearly_seasonality": self.yearly_seasonality,
            "weekly_seasonality": self.weekly_seasonality,
            "daily_seasonality": self.daily_seasonality,
            "interval_width": self.interval_width,
            "uncertainty_samples": self.uncertainty_samples,
            **dict(self.prophet_extra),
        }


# Frozen, so one shared instance is a safe default argument.
DEFAULT_OPTIONS = ForecastOptions()
