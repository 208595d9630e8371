"""Fixtures of the backfill tests: a lake of real 2021 BTCUSDT minutes and the exchange replay server."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.batch.minute_ingest import ingest_window
from crypto_assets.batch.sources.discovery import discover_sources
from crypto_assets.exchange import client
from crypto_assets.exchange.replay.market import Market
from crypto_assets.settings import SourceSpec

SYMBOL = "BTCUSDT"
START = date(2021, 3, 26)  # the first day of the recording
LAKE_WINDOW = (datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 5, 1, tzinfo=UTC))
# Ten days that hold two real exchange outages (2021-04-20 02:00, 150 min; 2021-04-25 04:01, 284 min).
HOLE = (datetime(2021, 4, 16, tzinfo=UTC), datetime(2021, 4, 26, tzinfo=UTC))
OUTAGE_MINUTES = 150 + 284


def recording(shared_data: Path) -> Path:
    return shared_data / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv"


def april(lake: Path, dataset: str = "minute_raw") -> Path:
    return lake / dataset / f"symbol={SYMBOL}" / "year=2021" / "month=04" / "part-0.parquet"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_lake(shared_data: Path, lake: Path, sources: list[Path] | None = None):
    found, problems = discover_sources([SourceSpec(str(p)) for p in sources or [recording(shared_data)]], [SYMBOL])
    assert not problems
    return ingest_window(found, lake, [SYMBOL], *LAKE_WINDOW)


def punch_hole(lake: Path, start: datetime = HOLE[0], end: datetime = HOLE[1]) -> int:
    """Delete [start, end) from the April partition of minute_raw; returns the rows deleted."""
    from crypto_assets.lake.atomic import write_parquet_atomic

    frame = pl.read_parquet(april(lake))
    kept = frame.filter((pl.col("open_time") < start) | (pl.col("open_time") >= end))
    write_parquet_atomic(kept, april(lake))
    return frame.height - kept.height


@pytest.fixture(scope="session")
def recorded_market(shared_data) -> Market:
    """The replay's view of the same recording the lake is built from."""
    return Market.from_sources([recording(shared_data)], [SYMBOL])


@pytest.fixture(scope="session")
def original_lake(shared_data, tmp_path_factory) -> Path:
    """minute_raw of March-April 2021 ingested from the recording, never modified by tests."""
    lake = tmp_path_factory.mktemp("original") / "lake"
    result = build_lake(shared_data, lake)
    assert result.minute.rows == 50_000
    return lake


@dataclass(frozen=True)
class QuickRetries(client.RetryPolicy):
    backoff_seconds: float = 0.001


@pytest.fixture
def quick_retries(monkeypatch):
    """The exchange client's usual attempts with millisecond backoffs: the same requests and errors for an
    exchange that is not there, without seconds of waiting between them."""
    monkeypatch.setattr(client, "RetryPolicy", QuickRetries)
