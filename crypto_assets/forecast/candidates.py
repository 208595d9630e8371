"""The candidate models: each one's point forecast for 1..horizon_days after the last day of a training slice.

One function per fold (candidate_paths) runs every model on the same slice, so the CV workers, the final
forecast and the command line share it. Intervals are not the models' own: they come from the CV residuals
(crypto_assets.forecast.evaluation).
"""

from __future__ import annotations

import numpy as np

from crypto_assets.forecast.baselines import DRIFT, NAIVE, drift, naive
from crypto_assets.forecast.model import anchored_path
from crypto_assets.forecast.options import ForecastOptions

PROPHET = "prophet"
AUTO_ETS = "auto_ets"
AUTO_ARIMA = "auto_arima"
ALL_MODELS = (PROPHET, NAIVE, DRIFT, AUTO_ETS, AUTO_ARIMA)
LABELS = {PROPHET: "Prophet", NAIVE: "naive", DRIFT: "drift", AUTO_ETS: "AutoETS", AUTO_ARIMA: "AutoARIMA"}


def _statsforecast_path(name: str, y: np.ndarray, options: ForecastOptions) -> np.ndarray:
    from statsforecast.models import AutoARIMA, AutoETS

    window = y[-options.stat_window_days :]
    log = np.log(window) if options.log_price else window
    # A season needs two full cycles in the window; shorter slices fit without one.
    season = options.season_length if len(window) >= 2 * options.season_length else 1
    model = AutoETS(season_length=season) if name == AUTO_ETS else AutoARIMA(season_length=season)
    mean = np.asarray(model.forecast(y=log, h=options.horizon_days)["mean"], dtype=float)
    return np.exp(mean) if options.log_price else mean


def candidate_paths(
    ds: np.ndarray, y: np.ndarray, options: ForecastOptions
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every model's path (length horizon_days) trained on (ds, y) alone, and the errors of models that failed.

    Top-level and polars-free, so it runs in a spawned worker. A model that fails on a slice gets a NaN path
    (it then cannot be champion) and its error, so one bad fit never stops the others.
    """
    hs = list(range(1, options.horizon_days + 1))
    last = np.array([len(y) - 1])
    paths: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for name in options.models:
        try:
            if name == NAIVE:
                paths[name] = naive(y, last, hs, options.z).yhat[0]
            elif name == DRIFT:
                paths[name] = drift(y, last, hs, options.z).yhat[0]
            elif name == PROPHET:
                paths[name] = anchored_path(ds, y, options)
            elif name in (AUTO_ETS, AUTO_ARIMA):
                paths[name] = _statsforecast_path(name, y, options)
            else:
                raise ValueError(f"unknown model {name!r}; known: {', '.join(ALL_MODELS)}")
        except Exception as exc:  # noqa: BLE001 - reported per model and fold, the other models go on
            if name == NAIVE:
                raise
            paths[name] = np.full(options.horizon_days, np.nan)
            errors[name] = f"{type(exc).__name__}: {exc}"
    return paths, errors
