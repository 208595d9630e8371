"""The gap report and the backfill's pure steps on tiny tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crypto_assets import quality
from crypto_assets.batch import checks
from crypto_assets.batch.backfill.checks import gap_summary, gap_table, gaps_filled
from crypto_assets.batch.backfill.transforms import (
    GAP_SCHEMA,
    exchange_rows,
    expected_spans,
    flag_known_empty,
    gap_report,
    merge_minutes,
    month_starts,
    plan_chunks,
    ranges_frame,
    replace_quarantine,
    unfilled_ranges,
    within_ranges,
)
from crypto_assets.batch.transforms.gaps import gaps_between_sorted, merge_ranges, missing_ranges
from crypto_assets.lake.layout import Month
from crypto_assets.schema import MINUTE_SCHEMA, QUARANTINE_SCHEMA
from crypto_assets_tests.minute_checks import minutes_complete

T0 = datetime(2024, 1, 31, 23, 50, tzinfo=UTC)
M = timedelta(minutes=1)


def at(minute: int) -> datetime:
    return T0 + minute * M


def candles(symbol: str, minutes: list[int], price: float = 10.0) -> pl.DataFrame:
    rows = [(symbol, at(m), price, price, price, price, 1.0) for m in minutes]
    return pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")


def spans(*rows: tuple[str, int, int]) -> pl.LazyFrame:
    return pl.LazyFrame(
        [(s, at(a), at(b)) for s, a, b in rows],
        schema={"symbol": pl.String, "span_start": GAP_SCHEMA["gap_start"], "span_end": GAP_SCHEMA["gap_end"]},
        orient="row",
    )


def as_tuples(frame: pl.DataFrame, *columns: str) -> list[tuple]:
    return [
        tuple(int((v - T0) / M) if isinstance(v, datetime) else v for v in row)
        for row in frame.select(columns or frame.columns).iter_rows()
    ]


def test_missing_ranges_cover_leading_interior_trailing_and_empty_spans():
    minutes = pl.concat([candles("A", [2, 3, 3, 7]), candles("B", [0]), candles("A", [40])])  # 40: outside the span
    gaps = missing_ranges(minutes.lazy(), spans(("A", 0, 10), ("B", 0, 1), ("C", 0, 5))).collect()
    assert as_tuples(gaps) == [("A", 0, 2, 2), ("A", 4, 7, 3), ("A", 8, 10, 2), ("C", 0, 5, 5)]


def test_missing_ranges_keep_several_spans_of_a_symbol_apart():
    minutes = candles("A", [1, 12])
    gaps = missing_ranges(minutes.lazy(), spans(("A", 0, 3), ("A", 10, 14))).collect()
    assert as_tuples(gaps) == [("A", 0, 1, 1), ("A", 2, 3, 1), ("A", 10, 12, 2), ("A", 13, 14, 1)]


@pytest.mark.parametrize("seed", range(5))
def test_gaps_of_sorted_minutes_in_one_pass_equal_the_general_search(seed):
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in ("A", "B", "C"):
        present = np.flatnonzero(rng.random(3000) > rng.choice([0.01, 0.3, 0.9]))
        frames.append(candles(symbol, present.tolist()))
    minutes = pl.concat(frames)  # (symbol, open_time) order, as ingested
    spans = checks.symbol_spans(minutes).lazy()
    general = missing_ranges(minutes.lazy(), spans).collect()
    one_pass = gaps_between_sorted(minutes.lazy()).collect()
    assert one_pass.equals(general) and general.height > 0
    # The check takes the one-pass route for the dataset's order and the general one otherwise.
    shuffled = minutes.sample(fraction=1.0, shuffle=True, seed=seed)
    assert checks.minute_gaps(minutes).equals(checks.minute_gaps(shuffled))


def test_the_completeness_check_reports_the_same_gaps_as_before():
    minutes = candles("A", [0, 1, 5, 6, 9])
    gaps = checks.minute_gaps(minutes)
    # gap_end is inclusive there.
    assert as_tuples(gaps) == [("A", 2, 4, 3), ("A", 7, 8, 2)]
    assert minutes_complete(minutes).metadata["missing_minutes"] == 5


def test_incomplete_days_from_the_gaps_equal_a_count_of_every_days_minutes():
    day, midnight = 1440, 10  # at(10) is 2024-02-01 00:00
    feb = [date(2024, 2, d) for d in range(1, 6)]
    # Five days of A: a gap on the first day (not interior), one across the midnight of Feb 2-3, one minute
    # missing on Feb 4, the last day short at its end. B: Feb 2 missing as a whole.
    a = [m for m in range(5 * day - 300) if not (100 <= m < 200 or 2 * day - 5 <= m < 2 * day + 5 or m == 3 * day + 7)]
    b = [m for m in range(4 * day) if not (day <= m < 2 * day)]
    a_minutes = candles("A", [m + midnight for m in a])
    minutes = pl.concat([a_minutes, candles("B", [m + midnight for m in b])])

    counts = a_minutes.group_by("symbol", pl.col("open_time").dt.date().alias("date")).len()
    reference = counts.filter(
        (pl.col("date") > pl.col("date").min()) & (pl.col("date") < pl.col("date").max()) & (pl.col("len") < day)
    )
    assert (
        checks.incomplete_days(checks.minute_gaps(a_minutes), checks.symbol_spans(a_minutes)).rows()
        == reference.sort("date").select("symbol", "date").rows()
    )
    # A day with no candle at all never shows in a count of each day's minutes; its gap shows it.
    found = checks.incomplete_days(checks.minute_gaps(minutes), checks.symbol_spans(minutes))
    assert found.rows() == [("A", feb[1]), ("A", feb[2]), ("A", feb[3]), ("B", feb[1])]
    assert minutes_complete(minutes).metadata["incomplete_days"] == 4


def test_merge_ranges_joins_overlapping_and_touching_ranges_only():
    ranges = [("A", at(0), at(2)), ("A", at(2), at(3)), ("A", at(1), at(2)), ("A", at(5), at(6)), ("B", at(0), at(1))]
    merged = merge_ranges(ranges_frame(ranges).lazy()).collect()
    assert as_tuples(merged) == [("A", 0, 3, 3), ("A", 5, 6, 1), ("B", 0, 1, 1)]


def test_expected_span_runs_from_the_configured_start_to_the_last_closed_minute_clipped_to_the_window():
    window = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    now = datetime(2024, 2, 1, 0, 40, 30, tzinfo=UTC)
    frame = expected_spans({"A": date(2023, 5, 1), "B": date(2024, 2, 1)}, *window, now).collect()
    assert frame.rows() == [
        ("A", window[0], datetime(2024, 2, 1, 0, 40, tzinfo=UTC)),
        ("B", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 1, 0, 40, tzinfo=UTC)),
    ]
    later = expected_spans({"A": date(2023, 5, 1)}, *window, datetime(2030, 1, 1, tzinfo=UTC)).collect()
    assert later["span_end"].to_list() == [window[1]]


def test_gap_report_cuts_at_month_starts_and_flags_known_empty_pieces():
    minutes = candles("A", [2, 30])
    known = ranges_frame([("A", at(5), at(12)), ("A", at(11), at(15))]).lazy()  # overlapping records
    cuts = month_starts(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    assert cuts == [datetime(2024, 2, 1, tzinfo=UTC)]  # minute 10
    report = gap_report(minutes.lazy(), spans(("A", 0, 50), ("B", 10, 12)), known, cuts).collect()
    assert report.schema == GAP_SCHEMA
    assert as_tuples(report) == [
        ("A", 0, 2, 2, False),
        ("A", 3, 5, 2, False),
        ("A", 5, 10, 5, True),  # cut at the month start, although the known-empty range goes on
        ("A", 10, 15, 5, True),
        ("A", 15, 30, 15, False),
        ("A", 31, 50, 19, False),
        ("B", 10, 12, 2, False),
    ]


def test_flagging_handles_no_gaps_and_no_known_ranges():
    empty_gaps = pl.LazyFrame(schema=dict(GAP_SCHEMA)).drop("exchange_empty")
    assert flag_known_empty(empty_gaps, ranges_frame([]).lazy(), []).collect().height == 0
    gaps = ranges_frame([("A", at(0), at(3))]).lazy()
    assert as_tuples(flag_known_empty(gaps, ranges_frame([]).lazy(), []).collect()) == [("A", 0, 3, 3, False)]


def test_chunks_stay_in_one_month_respect_the_size_and_join_close_gaps_into_one_request():
    report = pl.DataFrame(
        [
            ("A", at(0), at(2), 2, False),
            ("A", at(3), at(5), 2, False),
            ("A", at(5), at(10), 5, True),  # known empty: never asked for again
            ("A", at(10), at(40), 30, False),
            ("B", at(10), at(12), 2, False),
        ],
        schema=GAP_SCHEMA,
        orient="row",
    )
    chunks = plan_chunks(report, chunk_minutes=12, page_minutes=10)
    assert [(c.symbol, str(c.month), c.minutes) for c in chunks] == [
        ("A", "2024-01", 4),
        ("A", "2024-02", 12),
        ("A", "2024-02", 12),
        ("A", "2024-02", 6),
        ("B", "2024-02", 2),
    ]
    first = chunks[0]
    assert first.gaps == ((at(0), at(2)), (at(3), at(5)))
    assert first.fetches == ((at(0), at(5)),)  # one page covers both gaps
    assert sum(c.minutes for c in chunks) == 2 + 2 + 30 + 2
    # Far-apart gaps are asked for separately rather than paging through stored minutes.
    apart = plan_chunks(ranges_frame([("A", at(10), at(11)), ("A", at(60), at(61))]), 100, page_minutes=10)
    assert apart[0].fetches == ((at(10), at(11)), (at(60), at(61)))
    with pytest.raises(ValueError):
        plan_chunks(report, 0)


def test_rows_outside_the_gaps_are_dropped_and_unanswered_minutes_become_empty_ranges():
    requested = ranges_frame([("A", at(0), at(3)), ("A", at(5), at(8))])
    page = candles("A", [0, 1, 2, 3, 4, 5, 7])
    inside = within_ranges(page.lazy(), requested.lazy()).collect()
    assert as_tuples(inside, "open_time") == [(0,), (1,), (2,), (5,), (7,)]
    empty = unfilled_ranges(requested.lazy(), inside.lazy()).collect()
    assert as_tuples(empty) == [("A", 6, 7, 1)]


def test_exchange_rows_are_validated_with_the_file_rules_and_numbered():
    page = pl.concat(
        [candles("A", [0]), candles("A", [1], price=-1.0), candles("A", [2]).with_columns(high=pl.lit(1.0))]
    )
    rows = exchange_rows(page.lazy(), "lake/exchange_minutes/x.parquet", 3, at(100)).collect()
    assert rows["line"].to_list() == [1, 2, 3]
    reasons = rows["reason"].to_list()
    assert reasons[0] is None
    assert "open: zero or negative price" in reasons[1]
    assert "open outside [low, high]" in reasons[2]
    assert set(rows["source_file"]) == {"lake/exchange_minutes/x.parquet"}


def test_merge_keeps_existing_rows_and_adds_only_missing_minutes_sorted():
    existing = candles("A", [0, 2], price=1.0)
    new = candles("A", [3, 2, 1], price=2.0)
    merged = merge_minutes(existing, new)
    assert merged.schema == MINUTE_SCHEMA
    assert as_tuples(merged, "open_time", "close") == [(0, 1.0), (1, 2.0), (2, 1.0), (3, 2.0)]
    assert merge_minutes(merged, new).equals(merged)  # idempotent


def test_quarantine_rows_of_one_source_are_replaced_and_others_kept():
    def q(source: str, minute: int, reason: str) -> pl.DataFrame:
        row = ("A", at(minute), 1.0, 1.0, 1.0, 1.0, 1.0, source, minute + 1, reason)
        return pl.DataFrame([row], schema=QUARANTINE_SCHEMA, orient="row")

    existing = pl.concat([q("file.csv", 4, "x"), q("ex.parquet", 1, "old")])
    updated = replace_quarantine(existing, "ex.parquet", q("ex.parquet", 2, "new"))
    assert updated.select("source_file", "reason").rows() == [("ex.parquet", "new"), ("file.csv", "x")]


def test_gaps_filled_lists_outages_warns_on_fetchable_gaps_and_says_when_disabled():
    after = pl.DataFrame([("A", at(0), at(150), 150, True)], schema=GAP_SCHEMA, orient="row")
    outcome = gaps_filled(after)
    # Minutes the exchange has no candle for either (outages) cannot be filled: listed, not a failure.
    assert outcome.passed and "150 minutes in 1 range(s)" in outcome.description
    fetchable = gaps_filled(
        pl.concat([after, after.with_columns(exchange_empty=pl.lit(False), gap_start=pl.lit(at(200)))])
    )
    assert not fetchable.passed and fetchable.severity == quality.Severity.WARN
    assert outcome.metadata["remaining_gaps"].count("\n") == 2 and "| yes |" in outcome.metadata["remaining_gaps"]
    assert gaps_filled(after.clear()).passed
    todo = after.with_columns(exchange_empty=pl.lit(False))
    assert "backfill disabled" in gaps_filled(todo, enabled=False).description
    assert gap_summary(todo)["missing_minutes"] == 150 and gap_table(todo.clear()) == "none"


def test_month_of_a_chunk_is_the_month_of_its_gaps():
    report = pl.DataFrame([("A", at(10), at(20), 10, False)], schema=GAP_SCHEMA, orient="row")
    (chunk,) = plan_chunks(report, 100)
    assert chunk.month == Month(2024, 2)


def test_minutes_complete_names_the_partial_first_and_last_days():
    start = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    full = [("BTCUSDT", start + timedelta(minutes=i), 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(3 * 1440)]
    whole = [
        ("ETHUSDT", datetime(2024, 1, 2, tzinfo=UTC) + timedelta(minutes=i), 1.0, 1.0, 1.0, 1.0, 1.0)
        for i in range(1440)
    ]
    minutes = pl.DataFrame(full + whole, schema=MINUTE_SCHEMA, orient="row")
    outcome = minutes_complete(minutes)
    assert outcome.passed  # edge days are no gap
    assert outcome.metadata["partial_edge_days"] == "BTCUSDT 2024-01-01 (720 min), BTCUSDT 2024-01-04 (720 min)"
    assert minutes_complete(minutes.filter(pl.col("symbol") == "ETHUSDT")).metadata["partial_edge_days"] == "none"
