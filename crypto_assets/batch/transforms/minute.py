"""Validate raw 1-minute rows, split good rows from quarantine, and deduplicate.

Pure functions over Polars LazyFrames. The input is the canonical raw frame of
:mod:`crypto_assets.batch.sources.formats` plus ``symbol``, ``source_file`` and ``source_rank`` columns.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from crypto_assets.batch.transforms.order import is_sorted_by

PRICES = ("open", "high", "low", "close")

MINUTE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "open_time": pl.Datetime("us", "UTC"),
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
    }
)

# Bad rows keep what could be read of them, plus where they came from and why they were refused.
QUARANTINE_SCHEMA = pl.Schema(
    {**MINUTE_SCHEMA, "source_file": pl.String, "line": pl.Int64, "reason": pl.String}
)

# Bitcoin's genesis block: no exchange candle can be older.
EARLIEST_TIME = datetime(2009, 1, 3, tzinfo=UTC)


def epoch_to_datetime(value: pl.Expr) -> pl.Expr:
    """Unix time in s, ms, µs or ns, told apart per row by magnitude (dumps switched ms→µs in 2025)."""
    micros = (
        pl.when(value.abs() < 1e11).then(value * 1e6)
        .when(value.abs() < 1e14).then(value * 1e3)
        .when(value.abs() < 1e17).then(value)
        .otherwise(value / 1e3)
    )  # fmt: skip
    return pl.from_epoch(micros.floor().cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")


def text_to_datetime(value: pl.Expr) -> pl.Expr:
    """'2021-03-26 03:00:00' or ISO 'T' form, read as UTC."""
    normalized = value.str.strip_chars().str.replace("T", " ", literal=True).str.slice(0, 19)
    return normalized.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False).dt.replace_time_zone("UTC")


def parse_open_time(frame: pl.LazyFrame, epoch: bool) -> pl.LazyFrame:
    parse = epoch_to_datetime if epoch else text_to_datetime
    return frame.with_columns(parse(pl.col("time_raw")).alias("open_time"))


def _problem(condition: pl.Expr, text: str) -> pl.Expr:
    return pl.when(condition).then(pl.lit(text))


def with_reasons(frame: pl.LazyFrame, latest_time: datetime) -> pl.LazyFrame:
    """Add ``reason``: every rule a row breaks, joined by '; ', or null for a good row."""
    t = pl.col("open_time")
    problems = [
        _problem(t.is_null(), "open_time: unparseable timestamp"),
        _problem(t.is_not_null() & ((t < EARLIEST_TIME) | (t > latest_time)), "open_time: out of range"),
        _problem(t.is_not_null() & (t.dt.truncate("1m") != t), "open_time: not on a minute boundary"),
        _problem(pl.col("extra_fields"), "row: more fields than the header"),
    ]
    for name in PRICES:
        c = pl.col(name)
        problems += [
            _problem(c.is_null(), f"{name}: missing or not a number"),
            _problem(c.is_nan(), f"{name}: NaN"),
            _problem(c <= 0, f"{name}: zero or negative price"),
        ]
    v = pl.col("volume")
    problems += [
        _problem(v.is_null(), "volume: missing or not a number"),
        _problem(v.is_nan(), "volume: NaN"),
        _problem(v < 0, "volume: negative"),
        _problem(pl.col("high") < pl.col("low"), "high < low"),
        _problem((pl.col("open") < pl.col("low")) | (pl.col("open") > pl.col("high")), "open outside [low, high]"),
        _problem((pl.col("close") < pl.col("low")) | (pl.col("close") > pl.col("high")), "close outside [low, high]"),
    ]
    reason = pl.concat_str(problems, separator="; ", ignore_nulls=True)
    return frame.with_columns(pl.when(reason != "").then(reason).alias("reason"))


def drop_blank_lines(frame: pl.LazyFrame) -> pl.LazyFrame:
    """An empty line is not a record: it carries nothing to keep or to quarantine."""
    return frame.filter(~pl.all_horizontal(pl.col("time_raw", *PRICES, "volume").is_null()))


def quarantine_rows(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(pl.col("reason").is_not_null()).select(QUARANTINE_SCHEMA.names())


DEDUP_ORDER = ["symbol", "open_time", "source_rank", "line"]


def clean_minutes(frame: pl.DataFrame) -> pl.DataFrame:
    """Good rows, one per (symbol, open_time), sorted.

    When sources disagree on a minute, the row from the source listed first wins (then the earliest line),
    so the result never depends on file order on disk. Exchange files are almost always in order already,
    so the sort is skipped when one pass shows it is not needed.
    """
    good = frame.filter(pl.col("reason").is_null())
    if not is_sorted_by(good, DEDUP_ORDER):
        good = good.sort(DEDUP_ORDER)
    new_minute = (pl.col("symbol") != pl.col("symbol").shift(1)) | (pl.col("open_time") != pl.col("open_time").shift(1))
    return good.filter(new_minute.fill_null(True)).select(MINUTE_SCHEMA.names())
