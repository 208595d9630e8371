"""Where the forecast datasets live in the lake and how the assets read their inputs.

One file per symbol (the forecast assets are partitioned by symbol, not by month):
``<lake>/<dataset>/symbol=<S>/part-0.parquet``. Writes go through crypto_assets.lake.atomic.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crypto_assets.asset_names import DAILY_FILLED, PROPHET_INPUT
from crypto_assets.batch.pipeline import read_dataset
from crypto_assets.lake.location import read_parquet
from crypto_assets.schema import FILLED_SCHEMA, PROPHET_SCHEMA
from crypto_assets.settings import Settings

FORECAST_CV_PREDICTIONS = "forecast_cv_predictions"


def symbol_file(lake: Path, dataset: str, symbol: str, suffix: str = ".parquet") -> Path:
    return lake / dataset / f"symbol={symbol}" / f"part-0{suffix}"


def reports_dir(home: Path) -> Path:
    """Where the forecast reports go; ``crypto-assets reports`` serves this folder."""
    return home / "reports"


def report_path(home: Path, symbol: str) -> Path:
    return reports_dir(home) / f"forecast_{symbol}.html"


def report_url(settings: Settings, file_name: str) -> str:
    """A report's address on the reports server, for links in the Dagster UI."""
    return f"http://127.0.0.1:{settings.serving.reports_port}/{file_name}"


def read_history(lake: Path, symbol: str) -> pl.DataFrame:
    """The symbol's whole prophet_input (every stored month), sorted by day."""
    history = read_dataset(lake, PROPHET_INPUT, PROPHET_SCHEMA, [symbol]).collect()
    if history.height == 0:
        raise ValueError(f"prophet_input has no rows for {symbol}; materialize the batch graph first")
    return history.select(PROPHET_SCHEMA.names()).unique(["symbol", "ds"], keep="last").sort("ds")


def read_daily_filled(lake: Path, symbol: str) -> pl.DataFrame:
    return read_dataset(lake, DAILY_FILLED, FILLED_SCHEMA, [symbol]).collect().sort("date")


def read_symbol(lake: Path, dataset: str, symbol: str) -> pl.DataFrame:
    path = symbol_file(lake, dataset, symbol)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; materialize {dataset} for {symbol} first")
    return read_parquet(path)


__all__ = [
    "FORECAST_CV_PREDICTIONS",
    "read_daily_filled",
    "read_history",
    "read_symbol",
    "report_path",
    "symbol_file",
]
