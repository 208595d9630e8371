"""The daily aggregation against the exchange's own daily candles, on real Binance data."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from crypto_assets.batch.minute_ingest import ingest_window
from crypto_assets.batch.pipeline import build_daily_raw
from crypto_assets.batch.sources.discovery import discover_sources
from crypto_assets.settings import SourceSpec

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def test_daily_raw_equals_exchange_daily_candles_on_every_complete_day(shared_data, tmp_path):
    sources, problems = discover_sources([SourceSpec(str(shared_data / "binance_spot_1m"))], SYMBOLS)
    assert not problems and len(sources) == 6
    start, end = datetime(2021, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    result = ingest_window(sources, tmp_path, SYMBOLS, start, end)
    assert result.quarantined == 0 and result.minute.rows == 300_000

    daily = build_daily_raw(tmp_path, SYMBOLS, start, end).frame
    complete = daily.filter(pl.col("minute_count") == 1440)
    compared = 0
    for symbol in SYMBOLS:
        oracle = pl.read_csv(shared_data / "binance_spot_1d" / f"{symbol}_1d.csv", try_parse_dates=True)
        oracle = oracle.rename({"timestamp": "date"})
        ours = complete.filter(pl.col("symbol") == symbol)
        joined = ours.join(oracle, on="date", how="left", suffix="_exchange")
        assert joined["open_exchange"].null_count() == 0, "every complete day must exist in the exchange file"
        for column in ("open", "high", "low", "close"):
            assert (joined[column] == joined[f"{column}_exchange"]).all(), f"{symbol} {column} differs"
        assert ((joined["volume"] - joined["volume_exchange"]).abs() <= 1e-8).all(), f"{symbol} volume differs"
        compared += joined.height
    # Six files of ~34.7 days, minus partial first/last days and the 2021 outage days.
    assert compared >= 180


def test_outage_gaps_are_kept_and_visible_as_incomplete_days(shared_data, tmp_path):
    sources, _ = discover_sources([SourceSpec(str(shared_data / "binance_spot_1m" / "2021"))], SYMBOLS)
    start, end = datetime(2021, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)
    ingest_window(sources, tmp_path, SYMBOLS, start, end)
    daily = build_daily_raw(tmp_path, SYMBOLS, start, end).frame
    interior = daily.group_by("symbol").agg(
        (pl.col("minute_count").slice(1, pl.len() - 2) < 1440).sum().alias("short_days")
    )
    # The README of the data names three real outages of 150, 284 and 270 minutes.
    assert interior["short_days"].sum() >= 3
    missing = (1440 - daily.filter(pl.col("minute_count") < 1440)["minute_count"].cast(pl.Int64)).sum()
    assert missing >= 150 + 284 + 270
