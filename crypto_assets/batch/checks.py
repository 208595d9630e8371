"""Data-quality checks as pure functions over Polars frames.

Each returns a :class:`CheckOutcome`; the Dagster assets turn outcomes into ``AssetCheckResult`` objects, and
tests call the functions directly on tiny tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from crypto_assets.batch.transforms.gaps import MINUTE, gaps_between_sorted, missing_ranges
from crypto_assets.batch.transforms.order import is_sorted_by
from crypto_assets.quality import CheckOutcome, Severity, truncated
from crypto_assets.schema import MA_WINDOWS, OHLCV


def schema_matches(frame: pl.DataFrame, expected: pl.Schema) -> CheckOutcome:
    actual = dict(frame.schema)
    wanted = dict(expected)
    problems = [
        f"{name}: expected {dtype}, found {actual.get(name, 'missing')}"
        for name, dtype in wanted.items()
        if actual.get(name) != dtype
    ] + [f"{name}: unexpected column" for name in actual if name not in wanted]
    return CheckOutcome(
        not problems,
        "columns and types are as documented" if not problems else "; ".join(problems),
        metadata={"columns": ", ".join(f"{k}: {v}" for k, v in actual.items())},
    )


def unique_keys(frame: pl.DataFrame, keys: list[str]) -> CheckOutcome:
    # Our datasets are sorted by their keys, where "strictly increasing" proves uniqueness in one pass;
    # only unsorted input pays for hashing every key.
    if is_sorted_by(frame, keys, strict=True):
        return CheckOutcome(True, f"no duplicate ({', '.join(keys)})", metadata={"duplicate_rows": 0})
    duplicated = frame.select(keys).filter(pl.struct(keys).is_duplicated())
    return CheckOutcome(
        duplicated.height == 0,
        f"no duplicate ({', '.join(keys)})",
        metadata={"duplicate_rows": duplicated.height, "examples": str(duplicated.head(5).rows())},
    )


def ohlc_consistent(frame: pl.DataFrame) -> CheckOutcome:
    bad = frame.filter(
        (pl.col("low") <= 0)
        | (pl.col("high") < pl.col("low"))
        | ~pl.col("open").is_between(pl.col("low"), pl.col("high"))
        | ~pl.col("close").is_between(pl.col("low"), pl.col("high"))
        | (pl.col("volume") < 0)
        | pl.any_horizontal(pl.col(OHLCV).is_nan())
    )
    return CheckOutcome(
        bad.height == 0,
        "0 < low <= open, close <= high and volume >= 0 on every row",
        metadata={"inconsistent_rows": bad.height},
    )


def symbol_spans(minutes: pl.DataFrame) -> pl.DataFrame:
    """Each symbol's first minute and the minute after its last (``span_end`` exclusive)."""
    return (
        minutes.lazy()
        .group_by("symbol")
        .agg(pl.col("open_time").min().alias("span_start"), (pl.col("open_time").max() + MINUTE).alias("span_end"))
        .collect()  # lazily: only the two columns are read (an eager group_by took several times longer)
    )


def minute_gaps(minutes: pl.DataFrame, spans: pl.DataFrame | None = None) -> pl.DataFrame:
    """Missing minute ranges between consecutive candles of each symbol (``gap_end`` inclusive)."""
    if is_sorted_by(minutes, ["symbol", "open_time"], strict=True):  # as ingested: one pass
        ranges = gaps_between_sorted(minutes.lazy())
    else:
        ranges = missing_ranges(minutes.lazy(), (symbol_spans(minutes) if spans is None else spans).lazy())
    return ranges.select(
        "symbol", "gap_start", (pl.col("gap_end") - MINUTE).alias("gap_end"), pl.col("minutes").alias("missing_minutes")
    ).collect()


def incomplete_days(gaps: pl.DataFrame, spans: pl.DataFrame) -> pl.DataFrame:
    """(symbol, date) of the days strictly between a symbol's first and last day that miss a minute.

    Between the first and last candle every missing minute lies in a gap, so these are the days the gaps
    touch: far cheaper than counting the minutes of every day, and a day without any candle counts too."""
    bounds = spans.select(
        "symbol", pl.col("span_start").dt.date().alias("first"), (pl.col("span_end") - MINUTE).dt.date().alias("last")
    )
    return (
        gaps.select("symbol", pl.date_ranges(pl.col("gap_start").dt.date(), pl.col("gap_end").dt.date()).alias("date"))
        .explode("date")
        .unique()
        .join(bounds, on="symbol")
        .filter((pl.col("date") > pl.col("first")) & (pl.col("date") < pl.col("last")))
        .select("symbol", "date")
        .sort("symbol", "date")
    )


def partial_edge_days(minutes: pl.DataFrame, spans: pl.DataFrame) -> pl.DataFrame:
    """The first and last day of each symbol's data when they hold fewer than 1440 minutes.

    Their daily candles cover only part of the day, so they differ from the exchange's."""
    edges = spans.select(
        "symbol",
        pl.concat_list(pl.col("span_start").dt.date(), (pl.col("span_end") - MINUTE).dt.date())
        .list.unique()
        .alias("date"),
    ).explode("date")
    counts = (
        minutes.lazy()
        .select("symbol", pl.col("open_time").dt.date().alias("date"))
        .join(edges.lazy(), on=["symbol", "date"], how="semi")
        .group_by("symbol", "date")
        .len("minutes")
        .collect()
    )
    return counts.filter(pl.col("minutes") < 1440).sort("symbol", "date")


@dataclass
class Completeness:
    """What minutes_complete judges: the gaps, the incomplete days and the partial edge days of some symbols.
    Symbols share nothing here, so the parts of several symbols' rows add up by concatenation."""

    gaps: pl.DataFrame
    short_days: pl.DataFrame
    edges: pl.DataFrame

    @classmethod
    def of(cls, minutes: pl.DataFrame) -> Completeness:
        spans = symbol_spans(minutes)
        gaps = minute_gaps(minutes, spans)
        return cls(gaps, incomplete_days(gaps, spans), partial_edge_days(minutes, spans))

    @classmethod
    def concat(cls, parts: list[Completeness]) -> Completeness:
        return cls(*(pl.concat([getattr(p, name) for p in parts]) for name in ("gaps", "short_days", "edges")))


def completeness_outcome(parts: Completeness, max_listed: int = 25, backfilled: bool = False) -> CheckOutcome:
    """minutes_complete, WARN: every day between a symbol's first and last minute has all 1440 minutes; names
    partial edge days.

    With the exchange backfill on (``backfilled``), gaps in the files are its input, not a failure: the check
    passes, lists them, and exchange_backfill's ``gaps_filled`` judges what the exchange could not fill."""
    gaps, short_days, edges = parts.gaps, parts.short_days, parts.edges
    edge_listing = ", ".join(truncated([f"{s} {d} ({n} min)" for s, d, n in edges.iter_rows()]))
    listing = "\n".join(
        f"| {r['symbol']} | {r['gap_start']:%Y-%m-%d %H:%M} | {r['gap_end']:%Y-%m-%d %H:%M} | {r['missing_minutes']} |"
        for r in gaps.sort("missing_minutes", descending=True).head(max_listed).iter_rows(named=True)
    )
    if gaps.height and backfilled:
        description = (
            f"{gaps.height:,} gap(s) in the files, handed to exchange_backfill (its gaps_filled check judges "
            "what remains after the exchange)"
        )
    else:
        description = "every minute between the first and last candle is present"
    return CheckOutcome(
        gaps.height == 0 or backfilled,
        description,
        Severity.WARN,
        metadata={
            "gaps": gaps.height,
            "missing_minutes": int(gaps["missing_minutes"].sum() or 0),
            "incomplete_days": short_days.height,
            # Not gaps: a symbol's data may begin or end mid-day, and those days' candles are partial.
            "partial_edge_days": edge_listing or "none",
            "largest_gaps": "| symbol | from | to | minutes |\n|---|---|---|---|\n" + listing if listing else "none",
        },
    )


def no_missing_days(filled: pl.DataFrame) -> CheckOutcome:
    steps = (
        filled.sort("symbol", "date")
        .with_columns((pl.col("date") - pl.col("date").shift(1).over("symbol")).alias("step"))
        .filter(pl.col("step").is_not_null() & (pl.col("step") != timedelta(days=1)))
    )
    return CheckOutcome(
        steps.height == 0,
        "one row per calendar day, no day missing or repeated",
        metadata={"breaks": steps.height, "filled_days": int(filled["is_filled"].sum() or 0)},
    )


def reference_moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Plain cumulative-sum moving average, NaN until a full window exists."""
    out = np.full(values.shape, np.nan)
    if len(values) >= window:
        sums = np.cumsum(np.insert(values, 0, 0.0))
        out[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return out


def moving_averages_correct(context: pl.DataFrame, window_start: date, tolerance: float = 1e-9) -> CheckOutcome:
    """ma7/ma30 equal the reference wherever enough history exists, and are null only where it does not."""
    mismatches = 0
    checked = 0
    for _, rows in context.sort("symbol", "date").group_by("symbol", maintain_order=True):
        closes = rows["close"].to_numpy()
        in_window = (rows["date"] >= window_start).to_numpy()
        for name, size in MA_WINDOWS.items():
            expected = reference_moving_average(closes, size)[in_window]
            actual = rows[name].to_numpy()[in_window].astype(float)
            both_nan = np.isnan(expected) & np.isnan(actual)
            close_enough = np.abs(actual - expected) <= tolerance * np.maximum(1.0, np.abs(expected))
            mismatches += int((~(both_nan | close_enough)).sum())
            checked += int(in_window.sum())
    return CheckOutcome(
        mismatches == 0,
        "ma7 and ma30 equal a plain cumulative-sum reference",
        metadata={"values_checked": checked, "mismatches": mismatches},
    )


def fresh(latest: date | None, max_age_hours: float, now: datetime | None = None) -> CheckOutcome:
    now = now or datetime.now(UTC)
    if latest is None:
        return CheckOutcome(False, "no data yet", Severity.WARN)
    age = now - datetime(latest.year, latest.month, latest.day, tzinfo=UTC) - timedelta(days=1)
    hours = max(age.total_seconds() / 3600, 0.0)
    return CheckOutcome(
        hours <= max_age_hours,
        f"the latest day closed at most {max_age_hours:g} h ago",
        Severity.WARN,
        metadata={"latest_day": latest.isoformat(), "hours_since_close": round(hours, 1)},
    )


def no_nulls(frame: pl.DataFrame) -> CheckOutcome:
    nulls = {name: count for name, count in frame.null_count().row(0, named=True).items() if count}
    return CheckOutcome(not nulls, "no null values", metadata={"null_counts": str(nulls or "none")})
