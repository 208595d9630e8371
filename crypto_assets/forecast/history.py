"""Checks and conversions for the `prophet_input` contract (ds, y, symbol)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

REQUIRED_COLUMNS = ("ds", "y", "symbol")


@dataclass(frozen=True)
class Series:
    """One symbol's history as plain arrays (cheap to pickle to CV workers)."""

    symbol: str
    ds: np.ndarray  # datetime64[D], strictly daily, increasing
    y: np.ndarray  # float64


def validate_history(history: pl.DataFrame, *, require_positive: bool = False) -> None:
    """Raise ValueError unless history is one symbol of continuous daily rows."""
    missing = [c for c in REQUIRED_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"history is missing columns {missing}")
    if history.schema["ds"] != pl.Date:
        raise ValueError(f"ds must be pl.Date, got {history.schema['ds']}")
    if history.height < 2:
        raise ValueError("history needs at least 2 rows")
    if history["symbol"].n_unique() != 1:
        raise ValueError("history must hold exactly one symbol; split by symbol first")
    if history["ds"].null_count() or history["y"].null_count():
        raise ValueError("history has nulls in ds or y")
    if not np.isfinite(history["y"].to_numpy()).all():
        raise ValueError("history has non-finite y")
    steps = history["ds"].diff().drop_nulls().dt.total_days()
    if (steps != 1).any():
        raise ValueError("ds must be sorted, unique and continuous (one row per day)")
    if require_positive and (history["y"] <= 0).any():
        raise ValueError("log_price needs y > 0")


def to_series(history: pl.DataFrame, *, require_positive: bool = False) -> Series:
    validate_history(history, require_positive=require_positive)
    return Series(
        symbol=str(history["symbol"][0]),
        ds=history["ds"].to_numpy().astype("datetime64[D]"),
        y=history["y"].cast(pl.Float64).to_numpy().copy(),
    )
