"""Checks and metadata of the gap report and the exchange backfill, as pure functions over Polars frames."""

from __future__ import annotations

import polars as pl

from crypto_assets.quality import MAX_LISTED, CheckOutcome, Severity, truncated


def gap_table(gaps: pl.DataFrame, max_listed: int = 25) -> str:
    """Markdown table of the largest gaps (all columns of ``GAP_SCHEMA``), or 'none'."""
    if gaps.height == 0:
        return "none"
    rows = [
        f"| {r['symbol']} | {r['gap_start']:%Y-%m-%d %H:%M} | {r['gap_end']:%Y-%m-%d %H:%M} | {r['minutes']:,} | "
        f"{'yes' if r['exchange_empty'] else 'no'} |"
        for r in gaps.sort("minutes", "gap_start", descending=[True, False]).head(max_listed).iter_rows(named=True)
    ]
    more = f"\n\n{gaps.height - max_listed:,} more not listed" if gaps.height > max_listed else ""
    header = "| symbol | from | to (exclusive) | minutes | exchange has nothing |\n|---|---|---|---|---|\n"
    return header + "\n".join(rows) + more


def gap_summary(gaps: pl.DataFrame) -> dict[str, object]:
    """Counts for metadata: ranges and minutes still to fetch and already known to be empty at the exchange."""
    todo = gaps.filter(~pl.col("exchange_empty"))
    empty = gaps.filter(pl.col("exchange_empty"))
    per_symbol = todo.group_by("symbol").agg(pl.col("minutes").sum()).sort("symbol")
    if per_symbol.height > MAX_LISTED:  # the most minutes missing first
        per_symbol = per_symbol.sort("minutes", "symbol", descending=[True, False])
    return {
        "gaps": todo.height,
        "missing_minutes": int(todo["minutes"].sum() or 0),
        "exchange_empty_ranges": empty.height,
        "exchange_empty_minutes": int(empty["minutes"].sum() or 0),
        "missing_minutes_per_symbol": ", ".join(truncated([f"{s}: {m:,}" for s, m in per_symbol.iter_rows()]))
        or "none",
    }


def gaps_filled(
    gaps_after: pl.DataFrame,
    enabled: bool = True,
    error: str | None = None,
    max_listed: int = 25,
    skipped: str | None = None,
) -> CheckOutcome:
    """WARN: after the backfill no minute is missing, except where the exchange has nothing (listed, passes).

    ERROR when the exchange failed before every gap was asked for, or the backfill could not run (``error``).
    Passes, saying why, when the backfill was ``skipped`` on purpose (synthetic history, real exchange).
    """
    summary = gap_summary(gaps_after)
    metadata = summary | {"remaining_gaps": gap_table(gaps_after, max_listed)}
    todo, empty = summary["gaps"], summary["exchange_empty_ranges"]
    if skipped:
        return CheckOutcome(
            True, f"backfill skipped on purpose: {skipped}", Severity.WARN, metadata | {"skipped": skipped}
        )
    if error:
        description = f"the exchange failed, {summary['missing_minutes']:,} missing minutes left: {error}"
        return CheckOutcome(False, description, Severity.ERROR, metadata | {"error": error})
    if not enabled:
        description = f"backfill disabled: {summary['missing_minutes']:,} missing minutes were not fetched"
    elif todo:
        description = (
            f"{summary['missing_minutes']:,} missing minutes not filled: newer than the exchange's settled candles"
        )
    elif empty:
        description = (
            f"no gap left that the exchange has data for; {summary['exchange_empty_minutes']:,} minutes in "
            f"{empty} range(s) are missing at the exchange too (outages, listed)"
        )
    else:
        description = "every expected minute is present"
    # Minutes the exchange itself has no candle for (outages) cannot be filled by anyone: they are listed, and
    # the check fails only for minutes the exchange has or was not asked for.
    return CheckOutcome(todo == 0, description, Severity.WARN, metadata)
