"""Tests for the synthetic 1-minute OHLCV generator (tiny scale, a few seconds in total)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.batch import synthetic
from crypto_assets.batch.synthetic import (
    SCALES,
    SyntheticSeries,
    generate_dataset,
    generate_minutes,
    write_kaggle_csv,
)

BTC_TINY, ETH_TINY = SCALES["tiny"]


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return generate_minutes(BTC_TINY, seed=42)


@pytest.fixture(scope="module")
def eth() -> pl.DataFrame:
    return generate_minutes(ETH_TINY, seed=42)


def _minute_returns(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, log returns) of the distinct rows; Close/Open is the minute's move."""
    distinct = frame.unique(maintain_order=True)
    r = np.log(distinct["Close"].to_numpy() / distinct["Open"].to_numpy())
    return distinct["Timestamp"].to_numpy(), r


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


# --- API and scales ---------------------------------------------------------------


def test_scales_define_expected_series() -> None:
    assert set(SCALES) >= {"tiny", "small", "full"}
    for scale in ("tiny", "small", "full"):
        assert [s.symbol for s in SCALES[scale]] == ["BTCUSDT", "ETHUSDT"]
        for s in SCALES[scale]:
            assert s.start.tzinfo is not None and s.end.tzinfo is not None
            assert s.end == datetime(2025, 12, 14, tzinfo=UTC)
    full_btc, full_eth = SCALES["full"]
    assert full_btc.start == datetime(2012, 1, 1, tzinfo=UTC)
    assert full_eth.start == datetime(2017, 8, 17, tzinfo=UTC)
    assert 1 < full_btc.start_price < 20 and 100 < full_eth.start_price < 1000


def test_frame_schema_and_span(btc: pl.DataFrame) -> None:
    assert btc.schema == pl.Schema(
        {
            "Timestamp": pl.Int64,
            "Open": pl.Float64,
            "High": pl.Float64,
            "Low": pl.Float64,
            "Close": pl.Float64,
            "Volume": pl.Float64,
        }
    )
    ts = btc["Timestamp"].to_numpy()
    assert ts[0] == int(BTC_TINY.start.timestamp())
    assert ts[-1] == int(BTC_TINY.end.timestamp()) - 60
    assert np.all(ts % 60 == 0)
    assert np.all(np.diff(ts) >= 0), "sorted by time"
    assert btc["Open"][0] == BTC_TINY.start_price


# --- determinism ------------------------------------------------------------------


def test_same_seed_gives_identical_frames(btc: pl.DataFrame) -> None:
    assert generate_minutes(BTC_TINY, seed=42).equals(btc)


def test_different_seed_or_symbol_differs(btc: pl.DataFrame) -> None:
    assert not generate_minutes(BTC_TINY, seed=43).equals(btc)
    renamed = SyntheticSeries("XBTUSD", BTC_TINY.start, BTC_TINY.end, BTC_TINY.start_price)
    other = generate_minutes(renamed, seed=42)
    assert not np.array_equal(other["Close"].to_numpy()[:1000], btc["Close"].to_numpy()[:1000])


def test_csv_is_byte_identical_across_writes(tmp_path: Path, btc: pl.DataFrame) -> None:
    a = write_kaggle_csv(btc, tmp_path / "a.csv")
    b = write_kaggle_csv(generate_minutes(BTC_TINY, seed=42), tmp_path / "b.csv")
    assert a.read_bytes() == b.read_bytes()


def test_exp_matches_numpy() -> None:
    x = np.linspace(-30.0, 30.0, 100_001)
    np.testing.assert_allclose(synthetic._exp(x), np.exp(x), rtol=1e-14, atol=0)


# --- candle validity ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["btc", "eth"])
def test_every_row_is_a_valid_candle(name: str, request: pytest.FixtureRequest) -> None:
    frame: pl.DataFrame = request.getfixturevalue(name)
    o, h, l, c, v = (frame[col].to_numpy() for col in ("Open", "High", "Low", "Close", "Volume"))
    assert np.all(l > 0) and np.all(v > 0)
    assert np.all(l <= np.minimum(o, c)) and np.all(h >= np.maximum(o, c))
    assert np.all(np.isfinite(np.column_stack([o, h, l, c, v])))
    # Prices carry at most 2 decimals, volume at most 8.
    for prices in (o, h, l, c):
        np.testing.assert_array_equal(prices, np.round(prices, 2))
    np.testing.assert_array_equal(v, np.round(v, 8))


def test_open_equals_previous_close_without_gap(btc: pl.DataFrame) -> None:
    distinct = btc.unique(maintain_order=True)
    ts = distinct["Timestamp"].to_numpy()
    o, c = distinct["Open"].to_numpy(), distinct["Close"].to_numpy()
    contiguous = np.diff(ts) == 60
    np.testing.assert_array_equal(o[1:][contiguous], c[:-1][contiguous])


def test_volume_tracks_move_size(btc: pl.DataFrame) -> None:
    _, r = _minute_returns(btc)
    volume = btc.unique(maintain_order=True)["Volume"].to_numpy()
    assert np.corrcoef(volume, np.abs(r))[0, 1] > 0.2


# --- exchange artefacts -----------------------------------------------------------


def test_gaps_exist_and_are_outage_sized(btc: pl.DataFrame) -> None:
    month = btc.filter(pl.col("Timestamp") < int(BTC_TINY.start.timestamp()) + 30 * 86400)
    steps = np.diff(month.unique(maintain_order=True)["Timestamp"].to_numpy())
    gaps = steps[steps > 60] // 60 - 1  # missing minutes per gap
    assert gaps.size > 0
    assert gaps.min() >= 1 and gaps.max() <= 300


def test_duplicates_exist_and_are_exact_adjacent_copies(btc: pl.DataFrame) -> None:
    month = btc.filter(pl.col("Timestamp") < int(BTC_TINY.start.timestamp()) + 30 * 86400)
    ts = month["Timestamp"].to_numpy()
    repeated = np.flatnonzero(np.diff(ts) == 0)
    assert repeated.size > 0
    assert repeated.size < 0.001 * month.height, "duplicates stay rare (~0.01%)"
    for i in repeated:
        assert month.row(int(i)) == month.row(int(i) + 1)
    # No timestamp appears anywhere else: duplicates are only ever adjacent.
    assert month["Timestamp"].n_unique() == month.height - repeated.size


# --- statistical realism ------------------------------------------------------------


@pytest.mark.parametrize("name", ["btc", "eth"])
def test_volatility_clusters_but_returns_do_not_autocorrelate(name: str, request: pytest.FixtureRequest) -> None:
    _, r = _minute_returns(request.getfixturevalue(name))
    abs_acf = np.mean([_acf(np.abs(r), lag) for lag in range(1, 61)])
    assert abs_acf > 0.05
    assert max(abs(_acf(r, lag)) for lag in range(1, 11)) < 0.03


def test_returns_have_fat_tails(btc: pl.DataFrame) -> None:
    _, r = _minute_returns(btc)
    r = r - r.mean()
    kurtosis = float(np.mean(r**4) / np.mean(r**2) ** 2)
    assert kurtosis > 6  # a normal distribution has 3


@pytest.mark.parametrize("name", ["btc", "eth"])
def test_intraday_seasonality(name: str, request: pytest.FixtureRequest) -> None:
    ts, r = _minute_returns(request.getfixturevalue(name))
    hour = (ts // 3600) % 24
    by_hour = np.array([np.abs(r[hour == h]).mean() for h in range(24)])
    assert by_hour.max() / by_hour.min() > 1.5


def test_short_series_with_unknown_symbol() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    series = SyntheticSeries("SOLUSDT", start, start + timedelta(days=3), 120.0)
    frame = generate_minutes(series, seed=1)
    assert 0.99 * 3 * 1440 < frame.height <= 3 * 1440 + 10
    assert frame["Low"].min() > 0


def test_rejects_bad_series() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        generate_minutes(SyntheticSeries("BTCUSDT", start, start, 100.0))
    with pytest.raises(ValueError):
        unaligned = start + timedelta(seconds=5)
        generate_minutes(SyntheticSeries("BTCUSDT", unaligned, start + timedelta(days=1), 100.0))


# --- CSV and dataset ----------------------------------------------------------------


def test_csv_layout(tmp_path: Path, btc: pl.DataFrame) -> None:
    path = write_kaggle_csv(btc, tmp_path / "sub" / "BTCUSDT_kaggle_1m.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "Timestamp,Open,High,Low,Close,Volume"
    assert len(lines) == btc.height + 1
    first = lines[1].split(",")
    assert first[0] == f"{int(BTC_TINY.start.timestamp())}.0"
    for line in lines[1:200]:
        assert re.fullmatch(r"\d{10}\.0(,\d+\.\d{1,2}){4},\d+\.\d{1,8}", line), line
    back = pl.read_csv(path)
    assert back["Timestamp"].dtype == pl.Float64
    assert back.with_columns(pl.col("Timestamp").cast(pl.Int64)).equals(btc)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file left behind"


def test_generate_dataset_is_idempotent(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    def record(symbol: str, rows: int) -> None:
        calls.append((symbol, rows))

    paths = generate_dataset(tmp_path, scale="tiny", seed=42, progress=record)
    assert [p.name for p in paths] == ["BTCUSDT_kaggle_1m.csv", "ETHUSDT_kaggle_1m.csv"]
    assert [s for s, _ in calls] == ["BTCUSDT", "ETHUSDT"] and all(n > 50_000 for _, n in calls)
    meta = json.loads((tmp_path / "BTCUSDT_kaggle_1m.csv.meta.json").read_text())
    assert meta["scale"] == "tiny" and meta["seed"] == 42 and meta["rows"] == calls[0][1]
    assert meta["generator_version"] == synthetic.GENERATOR_VERSION
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    content = {p: p.read_bytes() for p in paths}

    # Same parameters: nothing is rewritten.
    calls.clear()
    assert generate_dataset(tmp_path, scale="tiny", seed=42, progress=record) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps
    assert calls == [("BTCUSDT", 0), ("ETHUSDT", 0)]

    # Different seed: regenerated with different content and a new sidecar.
    generate_dataset(tmp_path, scale="tiny", seed=7)
    for p in paths:
        assert p.read_bytes() != content[p]
    assert json.loads((tmp_path / "BTCUSDT_kaggle_1m.csv.meta.json").read_text())["seed"] == 7

    # Back to the original seed: the bytes come back exactly.
    generate_dataset(tmp_path, scale="tiny", seed=42)
    assert {p: p.read_bytes() for p in paths} == content


def test_generate_dataset_regenerates_damaged_file(tmp_path: Path) -> None:
    (btc_path, _) = generate_dataset(tmp_path, scale="tiny")
    original = btc_path.read_bytes()
    btc_path.write_bytes(original[: len(original) // 2])  # e.g. truncated by a copy
    generate_dataset(tmp_path, scale="tiny")
    assert btc_path.read_bytes() == original


def test_generate_dataset_rejects_unknown_scale(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scale"):
        generate_dataset(tmp_path, scale="huge")
