"""The exchange backfill against the real replay server: real 2021 data restored exactly, outages recorded
once, invalid candles quarantined, rate limits obeyed, and minute_raw rebuilt from files keeping it all."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from crypto_assets.batch.backfill.fill import backfill_window
from crypto_assets.batch.backfill.gaps import find_gaps
from crypto_assets.batch.backfill.store import EXCHANGE_EMPTY, EXCHANGE_MINUTES
from crypto_assets.batch.minute_ingest import ingest_window
from crypto_assets.batch.transforms.gaps import RANGE_SCHEMA
from crypto_assets.exchange.client import ExchangeClient
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.layout import Month, partition_path
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets.settings import ExchangeSettings
from crypto_assets_tests.backfill.conftest import (
    HOLE,
    LAKE_WINDOW,
    OUTAGE_MINUTES,
    START,
    SYMBOL,
    april,
    build_lake,
    digest,
    punch_hole,
    recording,
)

pytestmark = pytest.mark.integration  # a replay exchange server

OUTAGES = [
    (datetime(2021, 4, 20, 2, 0, tzinfo=UTC), datetime(2021, 4, 20, 4, 30, tzinfo=UTC)),
    (datetime(2021, 4, 25, 4, 1, tzinfo=UTC), datetime(2021, 4, 25, 8, 45, tzinfo=UTC)),
]


def client_for(replay: ReplayServer, **settings) -> ExchangeClient:
    return ExchangeClient(ExchangeSettings(rest_url=replay.rest_url, **settings))


def test_ten_deleted_days_are_restored_from_the_exchange_exactly_and_outages_are_asked_for_once(
    shared_data, recorded_market, original_lake, tmp_path
):
    lake = tmp_path / "lake"
    shutil.copytree(original_lake, lake)
    deleted = punch_hole(lake)
    assert deleted == 10 * 1440 - OUTAGE_MINUTES

    with ReplayServer(recorded_market) as replay:
        with client_for(replay) as client:
            result = backfill_window(lake, {SYMBOL: START}, client, *HOLE)
        assert result.added == deleted and result.received == deleted
        assert result.remaining.height == 0
        assert result.known_empty.select("gap_start", "gap_end").rows() == OUTAGES
        assert result.requests >= 15  # 14,400 minutes at 1000 per page, plus the exchange clock per range

        restored, original = pl.read_parquet(april(lake)), pl.read_parquet(april(original_lake))
        assert restored.equals(original), "the restored partition must hold exactly the original rows"
        assert digest(april(lake)) == digest(april(original_lake)), "and be byte-identical"
        stored = pl.read_parquet(april(lake, EXCHANGE_MINUTES))
        assert stored.height == deleted and stored["open_time"].is_unique().all()

        # A second run finds only the outages, which it knows the exchange has nothing for: no request.
        with client_for(replay) as client:
            again = backfill_window(lake, {SYMBOL: START}, client, *HOLE)
            assert again.chunks == [] and again.requests == 0 and again.added == 0
        assert digest(april(lake)) == digest(april(original_lake))

    # Rebuilding minute_raw from the file keeps it identical: exchange candles never replace a file's row.
    rebuilt = build_lake(shared_data, lake)
    assert rebuilt.duplicates_removed == deleted
    assert digest(april(lake)) == digest(april(original_lake))


def test_a_run_killed_between_its_writes_merges_what_it_had_fetched_without_asking_again(
    recorded_market, original_lake, tmp_path
):
    # The state a kill right after a chunk's first write leaves: candles in exchange_minutes, not in minute_raw.
    finished, interrupted = tmp_path / "finished", tmp_path / "interrupted"
    for lake in (finished, interrupted):
        shutil.copytree(original_lake, lake)
        deleted = punch_hole(lake)
    with ReplayServer(recorded_market) as replay:
        with client_for(replay) as client:
            backfill_window(finished, {SYMBOL: START}, client, *HOLE)
        shutil.copytree(finished / EXCHANGE_MINUTES, interrupted / EXCHANGE_MINUTES)
        with client_for(replay) as client:
            result = backfill_window(interrupted, {SYMBOL: START}, client, *HOLE)
    assert result.recovered == deleted and result.added == deleted
    # Only the outages, not yet known to be empty, are asked for.
    assert sum(c.gap_minutes for c in result.chunks) == OUTAGE_MINUTES and result.received == 0
    assert digest(april(interrupted)) == digest(april(original_lake))


def test_minute_raw_rebuilt_from_a_file_with_a_hole_keeps_the_backfilled_minutes(
    shared_data, recorded_market, original_lake, tmp_path
):
    full = pl.read_csv(recording(shared_data))
    holed = tmp_path / f"{SYMBOL}_holed.csv"
    stamp = pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC")
    full.filter((stamp < HOLE[0]) | (stamp >= HOLE[1])).write_csv(holed)
    lake = tmp_path / "lake"
    build_lake(shared_data, lake, [holed])
    assert pl.read_parquet(april(lake)).height == pl.read_parquet(april(original_lake)).height - (
        10 * 1440 - OUTAGE_MINUTES
    )

    with ReplayServer(recorded_market) as replay, client_for(replay) as client:
        backfill_window(lake, {SYMBOL: START}, client, *LAKE_WINDOW)
    assert digest(april(lake)) == digest(april(original_lake))

    rebuilt = build_lake(shared_data, lake, [holed])  # what the minute_raw asset does on every run
    assert rebuilt.quarantined == 0 and rebuilt.duplicates_removed == 0
    assert digest(april(lake)) == digest(april(original_lake))
    gaps = find_gaps(lake, {SYMBOL: START}, *LAKE_WINDOW, now=datetime(2026, 1, 1, tzinfo=UTC))
    # Left: before the recording starts, the outages, and after the replay clock (the recording's end).
    assert gaps.filter(pl.col("exchange_empty")).select("gap_start", "gap_end").rows() == [
        (datetime(2021, 3, 26, tzinfo=UTC), datetime(2021, 3, 26, 3, tzinfo=UTC)),
        *OUTAGES,
    ]
    assert gaps.filter(~pl.col("exchange_empty"))["gap_start"].to_list() == [datetime(2021, 4, 30, 3, 34, tzinfo=UTC)]


def test_the_backfill_finishes_under_429s_and_a_tight_weight_budget_without_a_ban(
    recorded_market, original_lake, tmp_path
):
    lake = tmp_path / "lake"
    shutil.copytree(original_lake, lake)
    hole = (datetime(2021, 4, 1, tzinfo=UTC), datetime(2021, 4, 6, tzinfo=UTC))
    deleted = punch_hole(lake, *hole)
    # 10 weight per second: the 16 requests of this backfill (weight 1 or 2) need several windows.
    with ReplayServer(recorded_market, weight_limit=10, weight_window_seconds=1.0) as replay:
        replay.inject(rest_429=3, rest_429_retry_after=1)
        settings = ExchangeSettings(rest_url=replay.rest_url, weight_limit_per_minute=10)
        with ExchangeClient(settings, weight_window_seconds=1.0) as client:
            result = backfill_window(lake, {SYMBOL: START}, client, *hole, chunk_minutes=1000)
        statuses = replay.status()["rest_status_counts"]
    assert result.added == deleted and result.remaining.height == 0
    assert statuses.get("429") == 3 and "418" not in statuses, statuses
    assert digest(april(lake)) == digest(april(original_lake))


def test_invalid_exchange_candles_are_quarantined_with_their_reason_and_survive_a_rebuild(tmp_path):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    minute = timedelta(minutes=1)
    rows = [(SYMBOL, t0 + i * minute, 10.0, 11.0, 9.0, 10.5, 1.0) for i in range(50) if not 10 <= i < 15]
    rows[3] = (SYMBOL, t0 + 3 * minute, 10.0, 8.0, 9.0, 10.5, 1.0)  # high < low
    market = Market.from_frame(pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row"))
    lake = tmp_path / "lake"
    window = (t0, t0 + timedelta(hours=1))

    with ReplayServer(market) as replay, client_for(replay) as client:  # exchange clock: 00:50
        result = backfill_window(lake, {SYMBOL: date(2024, 1, 1)}, client, *window)
    assert result.added == 44 and result.quarantined == 1
    month = Month(2024, 1)
    quarantine = pl.read_parquet(partition_path(lake, "quarantine", SYMBOL, month))
    assert quarantine.select("open_time", "source_file", "line").rows() == [
        (t0 + 3 * minute, str(partition_path(lake, EXCHANGE_MINUTES, SYMBOL, month)), 4)
    ]
    assert "high < low" in quarantine["reason"][0]
    empty = pl.read_parquet(partition_path(lake, EXCHANGE_EMPTY, SYMBOL, month))
    assert empty.schema == RANGE_SCHEMA
    # No valid candle at 00:03 and none in the outage; after the exchange clock nothing is recorded yet.
    assert empty.select("gap_start", "gap_end").rows() == [
        (t0 + 3 * minute, t0 + 4 * minute),
        (t0 + 10 * minute, t0 + 15 * minute),
    ]
    assert result.remaining.select("gap_start", "gap_end").rows() == [(t0 + 50 * minute, t0 + 60 * minute)]

    before = {name: digest(partition_path(lake, name, SYMBOL, month)) for name in ("minute_raw", "quarantine")}
    rebuilt = ingest_window([], lake, [SYMBOL], t0, datetime(2024, 2, 1, tzinfo=UTC))
    assert rebuilt.quarantined == 1 and rebuilt.minute.rows == 44
    assert {name: digest(partition_path(lake, name, SYMBOL, month)) for name in before} == before
