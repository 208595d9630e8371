"""Prophet's input: one row per day with ``ds`` (date), ``y`` (close) and ``symbol``."""

from __future__ import annotations

import polars as pl


def prophet_input(filled: pl.LazyFrame) -> pl.LazyFrame:
    return filled.sort("symbol", "date").select(
        pl.col("date").alias("ds"), pl.col("close").alias("y"), pl.col("symbol")
    )
