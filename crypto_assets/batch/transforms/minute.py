"""Validate raw 1-minute rows, split good rows from quarantine, and deduplicate.

Pure functions over Polars LazyFrames. The input is the canonical raw frame of
:mod:`crypto_assets.batch.sources.formats` plus ``symbol``, ``source_file`` and ``source_rank`` columns.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from crypto_assets.batch.transforms.order import is_sorted_by
from crypto_assets.schema import MINUTE_SCHEMA, OHLCV, PRICES, QUARANTINE_SCHEMA, epoch_to_datetime
from crypto_assets.validation import SettingsError, validate_symbol

# Bitcoin's genesis block: no exchange candle can be older.
EARLIEST_TIME = datetime(2009, 1, 3, tzinfo=UTC)


TEXT_TIME = r"^\s*(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(:\d{2})?(\.\d+)?\s*(.*?)\s*$"
UTC_NAMES = ("Z", "UTC", "GMT")
OFFSET = r"^([+-])(\d{2}):?(\d{2})?$"
MAX_OFFSET_MINUTES = 14 * 60


def _parse_text_time(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``open_time`` (UTC) and ``time_problem`` (why the written zone cannot be trusted, else null).

    The common form ('2021-03-26 03:00:00') is read directly; only other rows go through the regex (it skips
    nulls). Each step is its own column so Polars computes it once per row, not once per use.
    """
    text = pl.col("time_raw").str.strip_chars()
    frame = frame.with_columns(
        text.str.slice(0, 19)
        .str.replace("T", " ", literal=True)
        .str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False)
        .alias("_fast"),
        (text.str.len_bytes() == 19).alias("_plain"),
    )
    plain = pl.col("_fast").is_not_null() & pl.col("_plain")
    parts = ("_date", "_hm", "_s", "_frac", "_zone")
    frame = frame.with_columns(
        pl.when(~plain).then(text).str.extract_groups(TEXT_TIME).struct.rename_fields(list(parts)).alias("_p"),
        plain.alias("_plain"),
    ).unnest("_p")
    frame = frame.with_columns(
        pl.when(pl.col("_plain"))
        .then(pl.col("_fast"))
        .otherwise(
            (pl.col("_date") + " " + pl.col("_hm") + pl.col("_s").fill_null(":00")).str.strptime(
                pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False
            )
        )
        .alias("_naive"),
        pl.when(pl.col("_plain")).then(pl.lit("")).otherwise(pl.col("_zone")).alias("_zone"),
    )
    frame = frame.with_columns(
        pl.col("_zone").str.extract_groups(OFFSET).struct.rename_fields(["_sign", "_oh", "_om"]).alias("_o"),
        (pl.col("_zone").is_not_null() & (pl.col("_zone") != "")).alias("_has_zone"),
    ).unnest("_o")
    hours = pl.col("_oh").cast(pl.Int64, strict=False)
    minutes = pl.col("_om").cast(pl.Int64, strict=False).fill_null(0)
    sign = pl.when(pl.col("_sign") == "-").then(-1).otherwise(1)
    zone = pl.col("_zone")
    frame = frame.with_columns(
        pl.when(zone.is_in(UTC_NAMES) | (zone == ""))
        .then(0)
        .when(hours.is_not_null() & (minutes < 60))
        .then(sign * (hours * 60 + minutes))
        .alias("_offset")
    )
    usable = pl.col("_offset").is_not_null() & (pl.col("_offset").abs() <= MAX_OFFSET_MINUTES)
    frame = frame.with_columns(usable.alias("_usable"))
    has_zone, usable, naive = pl.col("_has_zone"), pl.col("_usable"), pl.col("_naive")
    problem = (
        pl.when(naive.is_null())
        .then(None)
        .when(has_zone & zone.str.contains("[A-Za-z]") & ~usable)
        .then(pl.lit("open_time: ambiguous time zone '") + zone + pl.lit("' (write an offset such as +02:00, or UTC)"))
        .when(has_zone & ~usable)
        .then(pl.lit("open_time: impossible UTC offset '") + zone + pl.lit("'"))
        # A file that writes offsets on some rows leaves it open what the rows without one mean.
        .when(~has_zone & (has_zone & usable).any())
        .then(pl.lit("open_time: no UTC offset, unlike other rows of this file (ambiguous)"))
    )
    fraction = pl.col("_frac").str.slice(1, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    utc = naive + pl.duration(microseconds=fraction) - pl.duration(minutes=pl.col("_offset"))
    frame = frame.with_columns(problem.alias("time_problem"))
    frame = frame.with_columns(
        pl.when(usable & pl.col("time_problem").is_null()).then(utc).dt.replace_time_zone("UTC").alias("open_time")
    )
    return frame.drop(*parts, "_fast", "_plain", "_naive", "_sign", "_oh", "_om", "_has_zone", "_offset", "_usable")


def parse_open_time(frame: pl.LazyFrame, epoch: bool) -> pl.LazyFrame:
    """Add ``open_time``; text times also get ``time_problem``, the reason a readable time cannot be trusted."""
    if epoch:
        return frame.with_columns(epoch_to_datetime(pl.col("time_raw")).alias("open_time"))
    return _parse_text_time(frame)


def _problem(condition: pl.Expr, text: str) -> pl.Expr:
    return pl.when(condition).then(pl.lit(text))


# Beyond any real market: prices above 1e12 or volumes above 1e16 per minute are a unit or parsing slip.
MAX_PRICE = 1e12
MAX_VOLUME = 1e16


def _value_problem(name: str, limit: float, negative: str) -> pl.Expr:
    """The first thing wrong with one value, or null (one chained rule per field keeps validation cheap)."""
    c = pl.col(name)
    return (
        pl.when(c.is_null())
        .then(pl.lit(f"{name}: missing or not a number"))
        .when(c.is_nan())
        .then(pl.lit(f"{name}: NaN"))
        .when(c.is_infinite())
        .then(pl.lit(f"{name}: not finite"))
        .when(c > limit)
        .then(pl.lit(f"{name}: absurdly large (above {limit:.0e})"))
        .when(c <= 0 if negative == "price" else c < 0)
        .then(pl.lit(f"{name}: zero or negative price" if negative == "price" else f"{name}: negative"))
    )


def validation_rules(names: list[str], latest_time: datetime) -> pl.Expr:
    """The reason text of a row, or null, for a frame with columns ``names``."""
    t = pl.col("open_time")
    has_time_problem = "time_problem" in names
    in_range = (t >= EARLIEST_TIME) & (t <= latest_time)
    problems = [
        pl.col("time_problem") if has_time_problem else None,
        _problem(
            t.is_null() & (pl.col("time_problem").is_null() if has_time_problem else True),
            "open_time: unparseable timestamp",
        ),
        _problem(t.is_not_null() & ~in_range, "open_time: out of range"),
        _problem(in_range & (t.dt.truncate("1m") != t), "open_time: not on a minute boundary"),
        _problem(pl.col("extra_fields"), "row: more fields than the header"),
        pl.col("symbol_problem") if "symbol_problem" in names else None,
    ]
    problems = [p for p in problems if p is not None]
    problems += [_value_problem(name, MAX_PRICE, "price") for name in PRICES]
    problems += [
        _value_problem("volume", MAX_VOLUME, "volume"),
        _problem(pl.col("high") < pl.col("low"), "high < low"),
        _problem((pl.col("open") < pl.col("low")) | (pl.col("open") > pl.col("high")), "open outside [low, high]"),
        _problem((pl.col("close") < pl.col("low")) | (pl.col("close") > pl.col("high")), "close outside [low, high]"),
    ]
    reason = pl.concat_str(problems, separator="; ", ignore_nulls=True)
    return pl.when(reason != "").then(reason)


def with_reasons(frame: pl.LazyFrame, latest_time: datetime) -> pl.LazyFrame:
    """Add ``reason``: every rule a row breaks, joined by '; ', or null for a good row."""
    return frame.with_columns(validation_rules(frame.collect_schema().names(), latest_time).alias("reason"))


def check_symbols(frame: pl.LazyFrame, symbol: str) -> pl.LazyFrame:
    """Add ``symbol_problem`` for rows whose own symbol (``symbol_raw``, from a file's symbol column) is not
    ``symbol``, the one the file is ingested as: missing, invalid, or another symbol's row, which must never be
    stored under this one. A frame without ``symbol_raw`` is returned as it is."""
    if "symbol_raw" not in frame.collect_schema().names():
        return frame
    written = pl.col("symbol_raw").str.strip_chars()
    problems = {}
    for value in frame.select(written.unique()).collect().to_series().drop_nulls().to_list():
        if value == symbol:
            continue
        try:
            problems[value] = f"symbol: {validate_symbol(value)}, but the file is ingested as {symbol}"
        except SettingsError as exc:
            problems[value] = f"symbol: {exc}" if value else "symbol: missing"
    problem = written.replace_strict(problems, default=None, return_dtype=pl.String)
    return frame.with_columns(
        pl.when(written.is_null()).then(pl.lit("symbol: missing")).otherwise(problem).alias("symbol_problem")
    )


def drop_blank_lines(frame: pl.LazyFrame) -> pl.LazyFrame:
    """An empty (or all-space) line is not a record: it carries nothing to keep or to quarantine."""
    time = pl.col("time_raw")
    if frame.collect_schema()["time_raw"] == pl.String:  # a line of spaces is blank too
        time = pl.when(time.str.strip_chars() != "").then(time)
    return frame.filter(~pl.all_horizontal(time.is_null(), *[pl.col(c).is_null() for c in OHLCV]))


def _time_as_written(frame: pl.LazyFrame) -> pl.Expr:
    """The time as the file wrote it: the text itself, or an epoch number without a spurious '.0'."""
    raw = pl.col("time_raw")
    if frame.collect_schema()["time_raw"] == pl.String:
        return raw
    number = (
        pl.when(raw.is_finite() & (raw == raw.floor()) & (raw.abs() < 9e18))
        .then(raw.cast(pl.Int64, strict=False).cast(pl.String))
        .otherwise(raw.cast(pl.String))
    )
    return pl.coalesce(pl.col("time_text"), number) if "time_text" in frame.collect_schema().names() else number


def quarantine_rows(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Rows with a reason, as QUARANTINE_SCHEMA.

    A time that could not be read or is out of range is shown as written (in the reason) and its ``open_time``
    is left empty: an epoch number such as 253402300799 (year 9999 in seconds) would otherwise show as
    whatever its misread unit makes of it.
    """
    bad = frame.filter(pl.col("reason").is_not_null())
    if "time_raw" in bad.collect_schema().names():
        reason = pl.col("reason")
        written = _time_as_written(bad)
        untrusted = reason.str.contains("open_time: (unparseable|out of range|ambiguous|impossible|no UTC offset)")
        bad = bad.with_columns(
            pl.when(reason.str.contains("open_time:") & written.is_not_null())
            .then(pl.concat_str(reason, pl.lit("; open_time as written: '"), written, pl.lit("'")))
            .otherwise(reason)
            .alias("reason"),
            pl.when(untrusted).then(None).otherwise(pl.col("open_time")).alias("open_time"),
        )
    return bad.select(QUARANTINE_SCHEMA.names())


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
