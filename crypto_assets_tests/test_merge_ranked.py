"""The merge of ranked minute rows and the month split, against plain references on random tables.

``merge_ranked`` and ``write_months`` each have fast paths (rows already sorted and unique, rows of one
symbol); every path must give exactly what the plain reference gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_assets.batch.transforms.merge import merge_ranked
from crypto_assets.lake.datasets import write_months
from crypto_assets.lake.layout import Month, partition_path
from crypto_assets.schema import MINUTE_SCHEMA, OHLCV

T0 = datetime(2021, 1, 31, 23, 50, tzinfo=UTC)  # minutes straddle a month's end
SYMBOLS = ("AAAUSDT", "BBBUSDT")
FRAME_SCHEMA = {**MINUTE_SCHEMA, "source_rank": pl.Int32, "line": pl.Int64}

# (symbol index, minute, value choice, source rank) per row.
rows_strategy = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 20), st.integers(0, 2), st.integers(0, 2)), max_size=60
)


def build(rows: list[tuple[int, int, int, int]], one_symbol: bool) -> pl.DataFrame:
    lines: dict[int, int] = {}
    records = []
    for symbol, minute, value, rank in rows:
        lines[rank] = lines.get(rank, 0) + 1  # (source_rank, line) is unique, as in a real merge
        price = 100.0 + value
        records.append(
            {
                "symbol": SYMBOLS[0 if one_symbol else symbol],
                "open_time": T0 + timedelta(minutes=minute),
                "open": price,
                "high": price + 1,
                "low": price - 1,
                "close": price,
                "volume": float(value),
                "source_rank": rank,
                "line": lines[rank],
            }
        )
    return pl.DataFrame(records, schema=FRAME_SCHEMA)


def arrange(frame: pl.DataFrame, order: str, seed: int) -> pl.DataFrame:
    if order == "shuffled":
        return frame.sample(fraction=1.0, shuffle=True, seed=seed)
    if order == "sorted":  # the usual shape of a file: in order, with adjacent duplicates
        return frame.sort("symbol", "open_time", "source_rank", "line")
    if order == "sorted_unique":  # exchange data and stored months: the fast path
        return frame.sort("symbol", "open_time", "source_rank", "line").unique(
            ["symbol", "open_time"], keep="first", maintain_order=True
        )
    return frame


def reference(frame: pl.DataFrame) -> tuple[list[tuple], list[tuple], int]:
    """Plain Python: per minute the lowest (rank, line) wins; each other version is a conflict or a duplicate."""
    by_key: dict[tuple, list[dict]] = {}
    for row in frame.iter_rows(named=True):
        by_key.setdefault((row["symbol"], row["open_time"]), []).append(row)
    winners, conflicts, duplicates = [], [], 0
    for key in sorted(by_key):
        versions = sorted(by_key[key], key=lambda r: (r["source_rank"], r["line"]))
        best = versions[0]
        winners.append(tuple(best[c] for c in MINUTE_SCHEMA.names()))
        for loser in versions[1:]:
            if any(loser[c] != best[c] for c in OHLCV):
                conflicts.append(
                    (*(loser[c] for c in MINUTE_SCHEMA.names()), loser["source_rank"], best["source_rank"])
                )
            else:
                duplicates += 1
    return winners, sorted(conflicts), duplicates


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_strategy,
    one_symbol=st.booleans(),
    order=st.sampled_from(["as_generated", "shuffled", "sorted", "sorted_unique"]),
    seed=st.integers(0, 2**16),
)
def test_merge_ranked_equals_a_plain_reference_on_every_path(rows, one_symbol, order, seed):
    frame = arrange(build(rows, one_symbol), order, seed)
    winners, conflicts, duplicates = merge_ranked(frame)
    want_winners, want_conflicts, want_duplicates = reference(frame)
    assert winners.columns == MINUTE_SCHEMA.names()
    assert winners.rows() == want_winners  # sorted by (symbol, open_time), one row per minute
    got = sorted(tuple(r) for r in conflicts.select(*MINUTE_SCHEMA.names(), "source_rank", "kept_rank").rows())
    assert got == want_conflicts
    assert duplicates == want_duplicates


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    rows=rows_strategy,
    one_symbol=st.booleans(),
    order=st.sampled_from(["as_generated", "shuffled", "sorted"]),
    seed=st.integers(0, 2**16),
)
def test_month_files_hold_each_months_rows_whatever_the_row_order(tmp_path_factory, rows, one_symbol, order, seed):
    lake = tmp_path_factory.mktemp("lake")
    frame = arrange(build(rows, one_symbol), order, seed).select(MINUTE_SCHEMA.names())
    months = [Month(2021, 1), Month(2021, 2)]
    write_months(frame, lake, "minute_raw", "open_time", list(SYMBOLS), months)
    for symbol in SYMBOLS:
        for month in months:
            path = partition_path(lake, "minute_raw", symbol, month)
            want = frame.filter((pl.col("symbol") == symbol) & (pl.col("open_time").dt.month() == month.month))
            if want.height == 0:
                assert not path.exists()
                continue
            got = pl.read_parquet(path)
            assert sorted(got.rows()) == sorted(want.rows())
