"""Materialization metadata shared by the batch assets: rows, time range, bytes and a preview."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from dagster import MetadataValue

from crypto_assets.lake.datasets import WriteSummary
from crypto_assets.quality import MAX_LISTED, markdown_table, truncated

PREVIEW_ROWS = 10


def symbol_stats(frame: pl.DataFrame, time_column: str) -> pl.DataFrame:
    """Rows and time range per symbol (symbol, len, first, last): all the metadata needs of a dataset's rows."""
    return (
        frame.group_by("symbol")
        .agg(pl.len(), pl.col(time_column).min().alias("first"), pl.col(time_column).max().alias("last"))
        .sort("symbol")
    )


def dataset_metadata(frame: pl.DataFrame, summary: WriteSummary, time_column: str) -> dict[str, object]:
    return stats_metadata(symbol_stats(frame, time_column), frame.head(PREVIEW_ROWS), summary)


def stats_metadata(stats: pl.DataFrame, preview: pl.DataFrame, summary: WriteSummary) -> dict[str, object]:
    """:func:`dataset_metadata` from :func:`symbol_stats` and the first rows, without the rows themselves."""
    rows = int(stats["len"].sum() or 0)
    first, last = (stats["first"].min(), stats["last"].max()) if rows else (None, None)
    per_symbol = stats.select("symbol", "len")
    if per_symbol.height > MAX_LISTED:  # the fewest rows first: a symbol left short is the news
        per_symbol = per_symbol.sort("len", "symbol")
    return {
        "rows": MetadataValue.int(rows),
        "first": MetadataValue.text(str(first) if first is not None else "none"),
        "last": MetadataValue.text(str(last) if last is not None else "none"),
        "rows_per_symbol": MetadataValue.text(
            ", ".join(truncated([f"{s}: {n}" for s, n in per_symbol.iter_rows()])) if rows else "none"
        ),
        "bytes_written": MetadataValue.int(summary.bytes_written),
        "files_written": MetadataValue.int(len(summary.files)),
        "files_removed": MetadataValue.int(len(summary.removed)),
        "preview": MetadataValue.md(markdown_table(preview)),
    }


def symbol_lines(
    frame: pl.DataFrame, time_column: str, symbols: list[str], notes: Mapping[str, str] | None = None
) -> list[str]:
    """Lines for a run's log: one per symbol (rows, the time range they cover, its ``notes``), or beyond
    MAX_LISTED symbols one summary line naming those with the fewest rows (details are in metadata)."""
    return stats_lines(symbol_stats(frame, time_column), symbols, notes)


def stats_lines(stats: pl.DataFrame, symbols: list[str], notes: Mapping[str, str] | None = None) -> list[str]:
    """:func:`symbol_lines` from :func:`symbol_stats`."""
    spans = {s: (n, first, last) for s, n, first, last in stats.filter(pl.col("len") > 0).iter_rows()}
    notes = notes or {}
    if len(symbols) > MAX_LISTED:
        fewest = sorted(symbols, key=lambda s: (spans.get(s, (0,))[0], s))
        listed = truncated(
            [f"{s} {spans.get(s, (0,))[0]:,}" + (f" ({notes[s]})" if s in notes else "") for s in fewest]
        )
        firsts = [v[1] for v in spans.values()]
        lasts = [v[2] for v in spans.values()]
        span = f", {min(firsts)} .. {max(lasts)}" if spans else ""
        rows = sum(v[0] for v in spans.values())
        return [f"{rows:,} rows for {len(spans)} of {len(symbols)} symbols{span}; fewest rows: {', '.join(listed)}"]
    lines = []
    for symbol in symbols:
        n, first, last = spans.get(symbol, (0, None, None))
        note = f", {notes[symbol]}" if symbol in notes else ""
        lines.append(f"{symbol}: {n:,} rows" + (f", {first} .. {last}" if n else "") + note)
    return lines


def months_label(start, end) -> str:
    """``2025-09 .. 2026-12`` for the window [start, end) of month partitions."""
    from datetime import timedelta

    last = end - timedelta(days=1)
    return (
        f"{start:%Y-%m}" if (start.year, start.month) == (last.year, last.month) else f"{start:%Y-%m} .. {last:%Y-%m}"
    )
