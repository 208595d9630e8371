"""Merge ranked minute rows into one row per (symbol, open_time), keeping every losing version visible.

Pure functions over Polars frames. Input rows carry ``source_rank`` (lower wins: the precedence of their
source) and ``line`` (earlier wins within one source). A losing row with the same values as the winner is a
duplicate; one with different values is a **conflict**, returned with both ranks so the caller can name both
sources.
"""

from __future__ import annotations

import polars as pl

from crypto_assets.batch.transforms.order import is_sorted_by
from crypto_assets.schema import MINUTE_SCHEMA, OHLCV

# A losing version of a minute: its values, the source it came from and the source whose row was kept.
CONFLICT_SCHEMA = pl.Schema({**MINUTE_SCHEMA, "source": pl.String, "kept_source": pl.String})


def merge_ranked(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(winners in ``MINUTE_SCHEMA``, sorted; conflicts as symbol, open_time, values, source_rank, kept_rank;
    the number of identical duplicates dropped).

    Exchange data and the lake's own months arrive sorted and unique, so one pass that proves it skips the sort
    and the search for duplicates; the forward fills run only over the rows of duplicated minutes. The ingest
    merges one symbol at a time: then the minutes alone order the rows and the symbols are never compared
    row to row.
    """
    keys = ["open_time"] if one_symbol(frame) else ["symbol", "open_time"]
    if is_sorted_by(frame, keys, strict=True):
        return frame.select(MINUTE_SCHEMA.names()), _no_conflicts(), 0
    order = [*keys, "source_rank", "line"]
    same_as_previous = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in keys]).fill_null(False)
    same_as_next = pl.all_horizontal([pl.col(k) == pl.col(k).shift(-1) for k in keys]).fill_null(False)
    # Sorted by the keys (one cheap pass), the rank order only matters among the few rows of duplicated minutes.
    if not (is_sorted_by(frame, keys) and is_sorted_by(frame.filter(same_as_previous | same_as_next), order)):
        frame = frame.sort(order)
    first = ~same_as_previous
    winners = frame.filter(first).select(MINUTE_SCHEMA.names())
    shared = frame.filter(same_as_previous | same_as_next)
    kept = [pl.when(first).then(pl.col(c)).forward_fill().alias(f"kept_{c}") for c in (*OHLCV, "source_rank")]
    losers = shared.with_columns(first.alias("first")).with_columns(kept).filter(~pl.col("first"))
    differs = pl.any_horizontal([pl.col(c) != pl.col(f"kept_{c}") for c in OHLCV])
    conflicts = losers.filter(differs).select(
        *MINUTE_SCHEMA.names(), "source_rank", pl.col("kept_source_rank").alias("kept_rank")
    )
    return winners, conflicts, losers.height - conflicts.height


def one_symbol(frame: pl.DataFrame) -> bool:
    """Whether every row has the same symbol (one comparison with a constant: cheaper than row to row)."""
    return frame.height < 2 or bool(frame.select((pl.col("symbol") == pl.col("symbol").first()).all()).item())


def _no_conflicts() -> pl.DataFrame:
    return pl.DataFrame(schema={**MINUTE_SCHEMA, "source_rank": pl.Int64, "kept_rank": pl.Int64})


def name_conflicts(conflicts: pl.DataFrame, labels: dict[int, str]) -> pl.DataFrame:
    """Conflicts with both sources' names in place of their ranks (``CONFLICT_SCHEMA``)."""
    mapping = {int(k): v for k, v in labels.items()}
    return conflicts.select(
        *MINUTE_SCHEMA.names(),
        pl.col("source_rank")
        .cast(pl.Int64)
        .replace_strict(mapping, default="unknown", return_dtype=pl.String)
        .alias("source"),
        pl.col("kept_rank")
        .cast(pl.Int64)
        .replace_strict(mapping, default="unknown", return_dtype=pl.String)
        .alias("kept_source"),
    )


def union_conflicts(existing: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Every losing version recorded so far, once, in (symbol, open_time, source) order."""
    both = pl.concat([existing.select(CONFLICT_SCHEMA.names()), new.select(CONFLICT_SCHEMA.names())])
    return both.unique(maintain_order=True).sort("symbol", "open_time", "source", "kept_source")
