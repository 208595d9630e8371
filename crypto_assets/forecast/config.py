"""Dagster run config for the forecast assets: mirrors ForecastOptions field for field."""

from __future__ import annotations

from dagster import Config
from pydantic import Field

from crypto_assets.forecast.options import DEFAULT_OPTIONS as D
from crypto_assets.forecast.options import ForecastOptions


class ForecastConfig(Config):
    """Forecast horizon, Prophet parameters, cross-validation settings and the MAPE warning threshold."""

    horizon_days: int = Field(D.horizon_days, description="days forecast past the last day of history")
    log_price: bool = Field(D.log_price, description="fit on log(close) and back-transform with exp")
    models: list[str] = Field(
        list(D.models), description="candidate models: prophet, naive, drift, auto_ets, auto_arima"
    )
    level_anchor: bool = Field(D.level_anchor, description="Prophet's forecast starts at the last close")
    changepoint_prior_scale: float = D.changepoint_prior_scale
    changepoint_range: float = D.changepoint_range
    seasonality_mode: str = Field(D.seasonality_mode, description="additive or multiplicative")
    yearly_seasonality: bool = D.yearly_seasonality
    weekly_seasonality: bool = D.weekly_seasonality
    daily_seasonality: bool = D.daily_seasonality
    interval_width: float = Field(D.interval_width, description="width of the yhat_lower..yhat_upper interval")
    uncertainty_samples: int = D.uncertainty_samples
    random_seed: int | None = Field(D.random_seed, description="seed for Prophet's interval sampling")
    stat_window_days: int = Field(D.stat_window_days, description="training days of AutoETS/AutoARIMA")
    season_length: int = Field(D.season_length, description="season of AutoETS/AutoARIMA in days")
    cv_horizons: list[int] = Field(list(D.cv_horizons), description="CV horizons in days, increasing")
    cv_initial_days: int = Field(D.cv_initial_days, description="fewest training days of a CV fold")
    cv_period_days: int = Field(D.cv_period_days, description="days between CV cut-offs")
    cv_max_cutoffs: int | None = Field(D.cv_max_cutoffs, description="most recent origins kept (53 weekly = 52 weeks)")
    cv_min_cutoffs: int = Field(D.cv_min_cutoffs, description="fewest origins; a shorter history skips the symbol")
    cv_workers: int = Field(D.cv_workers, description="processes fitting CV folds in parallel")
    cv_mp_context: str = Field(D.cv_mp_context, description="spawn or forkserver (fork deadlocks)")
    interval_levels: list[float] = Field(list(D.interval_levels), description="conformal interval levels")
    vol_window_days: int = Field(D.vol_window_days, description="days of returns that scale the intervals")
    coverage_tolerance: float = Field(
        D.coverage_tolerance, description="coverage further than this from its level warns"
    )
    bootstrap_samples: int = Field(D.bootstrap_samples, description="bootstrap samples of the skill interval")
    mape_warn_threshold: float = Field(D.mape_warn_threshold, description="1-day MAPE above this warns (0.05 = 5%)")

    def to_options(self) -> ForecastOptions:
        """Validated ForecastOptions (raises ValueError on inconsistent settings)."""
        values = self.model_dump()
        for name in ("cv_horizons", "models", "interval_levels"):
            values[name] = tuple(values[name])
        return ForecastOptions(**values)
