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

    # Candidate models scored on the same CV origins; the champion per horizon is served.
    # AutoARIMA (statsforecast) is available too, off by default: with a weekly season its order search took
    # 1-4 s a fit against 0.3 s for AutoETS, and both stay within about 2% of naive on log price.
    models: tuple[str, ...] = ("prophet", "naive", "drift", "auto_ets")

    # Prophet. The defaults below were chosen by rolling-origin CV on the real BTCUSDT and ETHUSDT daily
    # closes, 100 weekly origins whose 30-day targets end by 2023-12-31 (2024 is kept for the out-of-sample
    # acceptance backtest), skill = 1 - MAPE / naive's MAPE at 1 / 7 / 30 days:
    # - level_anchor: the forecast is last close * exp(Prophet's predicted change from the last day), so day 1
    #   starts at the observed price. Unanchored, Prophet's fitted level on the last day lags the price (its
    #   trend is smooth): skill -28 / -5 / -2 on ETHUSDT, -88 / -13 / -6 on BTCUSDT.
    # - yearly_seasonality off: crypto years do not repeat; with it, skill fell to -0.25 / -0.17 / -0.39
    #   (ETH) and -0.59 / -0.43 / -0.55 (BTC).
    # - changepoint_prior_scale 0.01 (anchored, no yearly term): the best of 0.05 / 0.01 / 0.005 / 0.001 on
    #   average, skill -0.02 / -0.02 / -0.05 (ETH) and -0.04 / -0.03 / -0.04 (BTC). A stiffer trend drifts
    #   less but misses turns; a looser one chases the last weeks.
    # - the whole history: a 730- or 1095-day training window was worse at every horizon (origins
    #   2023-06 .. 2024-11).
    # Prophet still does not beat naive on daily crypto closes; the champion selection below serves it only
    # where the CV shows it does.
    level_anchor: bool = True
    changepoint_prior_scale: float = 0.01
    # Prophet's default, 0.8, puts no changepoint in the last ~1.5 years of a crypto history.
    changepoint_range: float = 0.95
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    yearly_seasonality: bool = False
    weekly_seasonality: bool = True
    daily_seasonality: bool = False
    # Intervals of every model come from the CV residuals (conformal), not from Prophet's own sampling,
    # so predict() needs no samples (0 makes it several times cheaper). interval_width only names
    # Prophet's own band when uncertainty_samples > 0.
    interval_width: float = 0.8
    uncertainty_samples: int = 0
    # Prophet draws its interval samples from numpy's global RNG; a seed keeps
    # intervals reproducible. None leaves the RNG alone.
    random_seed: int | None = 0
    # AutoETS / AutoARIMA (statsforecast) on log price with a weekly season, fitted on the most recent
    # stat_window_days: on the whole history a fit costs 1.3-1.7 s instead of 0.2, for forecasts that stay
    # within 1% of each other.
    stat_window_days: int = 365
    season_length: int = 7

    # Rolling-origin cross-validation: an expanding window (each fold trains on everything up to its
    # origin), origins every cv_period_days, the most recent cv_max_cutoffs kept (53 weekly origins span
    # the last 52 weeks). A short history gets fewer origins (each fold keeps at least cv_initial_days of
    # training), down to cv_min_cutoffs; below that the forecast graph skips the symbol.
    cv_horizons: tuple[int, ...] = (1, 7, 30)
    cv_initial_days: int = 180
    cv_period_days: int = 7
    cv_max_cutoffs: int | None = 53
    cv_min_cutoffs: int = 12
    cv_workers: int = 2
    # Workers start from a fresh interpreter (see MpContext). "spawn" costs about
    # 2-3 s of imports per pool; share a pool across symbols (make_executor).
    cv_mp_context: MpContext = "spawn"

    # Conformal intervals: |log(y / yhat)| scaled by the volatility of the vol_window_days daily log returns
    # before the origin, quantile per horizon, so a band widens when the market gets rougher.
    interval_levels: tuple[float, ...] = (0.8, 0.95)
    vol_window_days: int = 60
    coverage_tolerance: float = 0.05
    # Skill intervals: circular block bootstrap over origins (blocks span the horizon's overlap).
    bootstrap_samples: int = 1000

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
        if max(self.cv_horizons) > self.horizon_days:
            raise ValueError("cv_horizons must not exceed horizon_days")
        if self.cv_initial_days < 2 or self.cv_period_days < 1:
            raise ValueError("cv_initial_days must be >= 2 and cv_period_days >= 1")
        if self.cv_max_cutoffs is not None and self.cv_max_cutoffs < 1:
            raise ValueError("cv_max_cutoffs must be >= 1 or None")
        if self.cv_min_cutoffs < 2 or (self.cv_max_cutoffs is not None and self.cv_min_cutoffs > self.cv_max_cutoffs):
            raise ValueError("cv_min_cutoffs must be >= 2 and at most cv_max_cutoffs")
        if self.cv_workers < 1:
            raise ValueError("cv_workers must be >= 1")
        if self.cv_mp_context not in ("spawn", "forkserver"):
            raise ValueError("cv_mp_context must be 'spawn' or 'forkserver' (fork deadlocks)")
        if self.uncertainty_samples < 0:
            raise ValueError("uncertainty_samples must be >= 0")
        unknown = set(self.models) - {"prophet", "naive", "drift", "auto_ets", "auto_arima"}
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}")
        if not self.models or "naive" not in self.models:
            raise ValueError("models must include naive (the reference every skill is measured against)")
        if not all(0.0 < level < 1.0 for level in self.interval_levels):
            raise ValueError("interval_levels must lie in (0, 1)")
        if self.stat_window_days < 3 * self.season_length or self.vol_window_days < 2:
            raise ValueError("stat_window_days must cover 3 seasons and vol_window_days >= 2")

    @property
    def z(self) -> float:
        """Two-sided normal quantile matching interval_width (1.2816 for 0.8)."""
        return NormalDist().inv_cdf(0.5 + self.interval_width / 2.0)

    @property
    def path_days(self) -> int:
        """Days ahead every fold forecasts: the served path and the CV horizons alike."""
        return self.horizon_days

    def min_history_days(self) -> int:
        """Shortest history the forecast graph runs on: cv_min_cutoffs origins with their training and horizon."""
        return self.cv_initial_days + max(self.cv_horizons) + (self.cv_min_cutoffs - 1) * self.cv_period_days

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
