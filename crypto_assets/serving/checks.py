"""Checks of the unified view as pure functions over Polars frames (see :mod:`crypto_assets.batch.checks`)."""

from __future__ import annotations

from datetime import date

import polars as pl

from crypto_assets import quality
from crypto_assets.batch import checks
from crypto_assets.quality import CheckOutcome, markdown_table
from crypto_assets.schema import DAILY_SCHEMA, MA_WINDOWS
from crypto_assets.serving.unified import BATCH, SPEED, UNIFIED_SCHEMA

VALUES = [c for c in DAILY_SCHEMA.names() if c not in ("symbol", "date")]


def schema(unified: pl.DataFrame) -> CheckOutcome:
    return checks.schema_matches(unified, UNIFIED_SCHEMA)


def one_row_per_day(unified: pl.DataFrame) -> CheckOutcome:
    return quality.combine(checks.unique_keys(unified, ["symbol", "date"]), checks.no_missing_days(unified))


def _up_to(seam: date | None) -> pl.Expr:
    return pl.lit(False) if seam is None else pl.col("date") <= seam


def _differs(column: str, tolerance: float) -> pl.Expr:
    mine, theirs = pl.col(column), pl.col(f"{column}_batch")
    if UNIFIED_SCHEMA[column] == pl.Float64:
        gap = (mine - theirs).abs() > tolerance * pl.max_horizontal(pl.lit(1.0), theirs.abs())
        return gap | (mine.is_null() != theirs.is_null())
    return mine.ne_missing(theirs)


def batch_precedence(
    unified: pl.DataFrame, batch_view: pl.DataFrame, seam: date | None, tolerance: float = 1e-12
) -> CheckOutcome:
    """Every closed batch day is in the view, marked ``batch``, with the batch view's values, and no day up
    to the seam comes from the speed layer."""
    compared = ["is_filled", *VALUES]
    closed = batch_view.filter(_up_to(seam))
    joined = closed.select("symbol", "date", *[pl.col(c).alias(f"{c}_batch") for c in compared]).join(
        unified, on=["symbol", "date"], how="left"
    )
    missing = joined.filter(pl.col("source").is_null())
    wrong_source = joined.filter(pl.col("source").is_not_null() & (pl.col("source") != BATCH))
    changed = joined.filter(
        pl.col("source").is_not_null() & pl.any_horizontal(_differs(c, tolerance) for c in compared)
    )
    speed_before_seam = unified.filter((pl.col("source") == SPEED) & _up_to(seam))
    problems = missing.height + wrong_source.height + changed.height + speed_before_seam.height
    examples = pl.concat([missing, wrong_source, changed]).select("symbol", "date").head(5).rows()
    return CheckOutcome(
        problems == 0,
        "every closed batch day is taken from the batch view unchanged; the speed layer only extends it",
        metadata={
            "seam_date": str(seam) if seam else "none",
            "closed_batch_days": closed.height,
            "missing_days": missing.height,
            "not_marked_batch": wrong_source.height,
            "values_changed": changed.height,
            "speed_rows_at_or_before_seam": speed_before_seam.height,
            "examples": str(examples) if examples else "none",
        },
    )


def moving_averages_continuous(
    unified: pl.DataFrame, batch_view: pl.DataFrame, seam: date | None, tolerance: float = 1e-9
) -> CheckOutcome:
    """MA7/MA30 equal a plain reference over the whole unified calendar (so across the seam), and equal the
    batch view's own averages on its closed days wherever the batch view had a full window."""
    if unified.height == 0:
        return CheckOutcome(True, "no rows", metadata={"values_checked": 0})
    reference = checks.moving_averages_correct(unified, unified["date"].min(), tolerance)
    closed = batch_view.filter(_up_to(seam))
    joined = closed.select("symbol", "date", *MA_WINDOWS).join(
        unified.select("symbol", "date", *[pl.col(m).alias(f"{m}_view") for m in MA_WINDOWS]), on=["symbol", "date"]
    )
    breaks = joined.filter(
        pl.any_horizontal(
            pl.col(m).is_not_null()
            & ((pl.col(m) - pl.col(f"{m}_view")).abs() > tolerance * pl.max_horizontal(pl.lit(1.0), pl.col(m).abs()))
            for m in MA_WINDOWS
        )
    )
    around = unified.filter(pl.lit(True) if seam is None else (pl.col("date") - seam).dt.total_days().abs() <= 3)
    outcome = quality.combine(
        reference,
        CheckOutcome(
            breaks.height == 0,
            "the batch view's MA7/MA30 are kept on closed days",
            metadata={"batch_days_compared": joined.height, "batch_ma_mismatches": breaks.height},
        ),
    )
    outcome.metadata["around_seam"] = markdown_table(around.select("date", "source", "is_filled", "close", *MA_WINDOWS))
    return outcome
