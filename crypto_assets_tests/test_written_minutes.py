"""minute_raw's checks and metadata, judged symbol by symbol from the files, equal those on the whole window."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_assets import quality
from crypto_assets.batch import checks
from crypto_assets.batch.metadata import dataset_metadata, stats_lines, stats_metadata, symbol_lines
from crypto_assets.batch.minute_ingest import MINUTE_DATASET
from crypto_assets.batch.written_minutes import judge_written_minutes
from crypto_assets.lake.datasets import scan_months, write_months
from crypto_assets.lake.layout import months_between
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets_tests.minute_checks import minutes_complete

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
START = datetime(2024, 1, 30, 22, 0, tzinfo=UTC)  # the minutes cross into February
WINDOW = months_between(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))

minute_sets = st.lists(st.integers(0, 5_000), max_size=60, unique=True).map(sorted)


def frame_of(minutes_by_symbol: dict[str, list[int]], bad: set[tuple[str, int]]) -> pl.DataFrame:
    rows = [
        (symbol, START + timedelta(minutes=m), 10.0, 11.0, 9.0, 12.0 if (symbol, i) in bad else 10.5, 1.0)
        for symbol, minutes in sorted(minutes_by_symbol.items())
        for i, m in enumerate(minutes)
    ]
    return pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.fixed_dictionaries({s: minute_sets for s in SYMBOLS}),
    bad=st.sets(st.tuples(st.sampled_from(SYMBOLS), st.integers(0, 5)), max_size=3),
    backfilled=st.booleans(),
)
def test_judged_symbol_by_symbol_equals_judged_whole(minutes, bad, backfilled):
    with tempfile.TemporaryDirectory() as directory:
        lake = Path(directory)
        summary = write_months(frame_of(minutes, bad), lake, MINUTE_DATASET, "open_time", SYMBOLS, WINDOW)
        whole = scan_months(lake, MINUTE_DATASET, SYMBOLS, WINDOW, MINUTE_SCHEMA).collect()
        written = judge_written_minutes(lake, SYMBOLS, WINDOW)

    def same(part: quality.CheckOutcome, full: quality.CheckOutcome, *ignore: str) -> None:
        assert (part.passed, part.description, part.severity) == (full.passed, full.description, full.severity)
        assert {k: v for k, v in part.metadata.items() if k not in ignore} == {
            k: v for k, v in full.metadata.items() if k not in ignore
        }

    same(written.schema, checks.schema_matches(whole, MINUTE_SCHEMA))
    same(written.unique, checks.unique_keys(whole, ["symbol", "open_time"]))
    same(written.ohlc, checks.ohlc_consistent(whole))
    assert written.ohlc.metadata["inconsistent_rows"] == whole.filter(pl.col("close") > pl.col("high")).height
    part = checks.completeness_outcome(written.completeness, backfilled=backfilled)
    full = minutes_complete(whole, backfilled=backfilled)
    same(part, full, "largest_gaps")  # gaps of equal size may be listed in another order
    assert (
        sorted(str(part.metadata["largest_gaps"]).splitlines())
        == sorted(str(full.metadata["largest_gaps"]).splitlines())
        or full.metadata["gaps"] > 25
    )
    assert stats_metadata(written.stats, written.preview, summary) == dataset_metadata(whole, summary, "open_time")
    assert stats_lines(written.stats, SYMBOLS) == symbol_lines(whole, "open_time", SYMBOLS)


def test_no_symbols_is_an_empty_window():
    with tempfile.TemporaryDirectory() as directory:
        written = judge_written_minutes(Path(directory), [], WINDOW)
    assert written.stats.height == 0 and written.schema.passed and written.unique.passed
    assert checks.completeness_outcome(written.completeness).passed
