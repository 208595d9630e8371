"""Printing query results as a table, CSV or JSON."""

from __future__ import annotations

import polars as pl

FORMATS = ("table", "csv", "json")


def render(frame: pl.DataFrame, fmt: str, max_rows: int = 100, newest: bool = False) -> str:
    """The frame as text; ``table`` shows at most ``max_rows`` rows, the last ones when ``newest`` (a time
    series' latest rows, today's included); CSV and JSON always hold every row."""
    if fmt == "csv":
        return frame.write_csv()
    if fmt == "json":
        return frame.write_json() + "\n"
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    shown = frame.tail(max_rows) if newest else frame.head(max_rows)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=60, tbl_hide_dataframe_shape=True):
        text = str(shown)
    if frame.height > shown.height:
        hidden = frame.height - shown.height
        where = "older rows before these" if newest else "more rows"
        text = (
            f"… {hidden:,} {where}"
            + f" ({frame.height:,} in all; --from/--to or --format csv or json for every row)\n"
            + text
            if newest
            else text + f"\n… {hidden:,} {where} ({frame.height:,} in all; --format csv or json prints every row)"
        )
    return text + "\n"
