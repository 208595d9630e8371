"""Row-order tests: one vectorized pass that can spare a sort or a hash of every key."""

from __future__ import annotations

import polars as pl


def is_sorted_by(frame: pl.DataFrame, keys: list[str], strict: bool = False) -> bool:
    """Whether rows are in ascending lexicographic order of ``keys`` (strictly: no two rows share all keys)."""
    if frame.height < 2:
        return True
    later = pl.lit(False)  # this row's key is greater than the previous row's
    equal = pl.lit(True)  # all keys so far equal the previous row's
    for key in keys:
        current, previous = pl.col(key), pl.col(key).shift(1)
        later = later | (equal & (current > previous))
        equal = equal & (current == previous)
    step_ok = later if strict else later | equal
    return bool(frame.select(step_ok.slice(1).all()).item())
