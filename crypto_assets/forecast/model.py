"""Prophet fit and forecast on one symbol's daily close."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import numpy as np
import pandas as pd
from prophet import Prophet

from crypto_assets.forecast.options import ForecastOptions


def quiet_stan_logging() -> None:
    """Drop cmdstanpy/prophet INFO chatter (one line per fit otherwise)."""
    # cmdstanpy's get_logger() installs its own handler and sets DEBUG when no
    # handler exists yet, so let it run first and then raise the level.
    from cmdstanpy.utils.logging import get_logger

    get_logger().setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed numpy's global RNG (Prophet samples from it) and restore it after."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _transform(y: np.ndarray, options: ForecastOptions) -> np.ndarray:
    return np.log(y) if options.log_price else y


def _inverse(values: np.ndarray, options: ForecastOptions) -> np.ndarray:
    return np.exp(values) if options.log_price else values


def fit_arrays(ds: np.ndarray, y: np.ndarray, options: ForecastOptions) -> Prophet:
    """Fit Prophet on plain arrays; used by forecast and by CV workers."""
    quiet_stan_logging()
    frame = pd.DataFrame({"ds": pd.to_datetime(ds), "y": _transform(y, options)})
    model = Prophet(**options.prophet_kwargs())
    return model.fit(frame)


def predict_arrays(
    model: Prophet, ds: np.ndarray, options: ForecastOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yhat, yhat_lower, yhat_upper) on the price scale for the given days.

    Without uncertainty samples Prophet predicts no band: lower and upper are then yhat itself.
    """
    with _seeded(options.random_seed):
        pred = model.predict(pd.DataFrame({"ds": pd.to_datetime(ds)}))
    # exp is monotone, so back-transformed quantiles stay ordered; yhat becomes
    # the median price forecast rather than the mean.
    columns = ("yhat", "yhat_lower", "yhat_upper") if "yhat_lower" in pred.columns else ("yhat",) * 3
    return tuple(  # type: ignore[return-value]
        _inverse(pred[col].to_numpy(dtype=float), options) for col in columns
    )


def anchored_path(ds: np.ndarray, y: np.ndarray, options: ForecastOptions) -> np.ndarray:
    """Prophet's point forecast for 1..horizon_days after ds[-1], trained on (ds, y) only.

    With level_anchor the path is the last close times Prophet's predicted change from the last day
    (on the log scale: last + f(T + h) - f(T)), so it starts at the observed price; without, Prophet's
    own level.
    """
    model = fit_arrays(ds, y, options)
    days = np.concatenate([ds[-1:], future_days(ds[-1], options.horizon_days)])
    raw = _transform(predict_arrays(model, days, options)[0], options)
    if options.level_anchor:
        raw = _transform(y[-1:], options) + raw - raw[0]
    return _inverse(raw[1:], options)


def future_days(last_ds: np.datetime64 | date, horizon_days: int) -> np.ndarray:
    start = np.datetime64(last_ds, "D")
    return start + np.arange(1, horizon_days + 1)
