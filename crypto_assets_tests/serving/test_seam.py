"""The seam through the real asset and a real Dagster instance: batch precedence, MAs continuous across the
seam, compaction and expiry of the micro-batches the batch layer supersedes."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from dagster import AssetKey, AssetSelection, materialize

from crypto_assets.batch.checks import reference_moving_average
from crypto_assets.definitions import build_definitions
from crypto_assets.lake.microbatch_log import CANDLES_1M, DAILY, log_dir, read_records
from crypto_assets.serving.speed_store import batch_dirs, compacted_file
from crypto_assets.serving.store import read_view
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at
from crypto_assets_tests.serving.helpers import (
    daily_minutes,
    minute_rows,
    speed_candles,
    utc,
    write_batch_layer,
    write_microbatch,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = date(2024, 1, 1)


def history(symbol: str, count: int) -> pl.DataFrame:
    base = 100.0 if symbol == "BTCUSDT" else 10.0
    days = [START + timedelta(days=i) for i in range(count)]
    return daily_minutes(symbol, days, [base + (i % 9) * 1.5 + i for i in range(count)])


def streamed(day: date, price: float, batch_id: int, minutes: int = 3) -> pl.DataFrame:
    start = utc(day.year, day.month, day.day)
    candles = pl.concat(
        [minute_rows(s, start, minutes, price * (1 if s == "BTCUSDT" else 0.1), step=0.5) for s in SYMBOLS]
    )
    return speed_candles(candles, batch_id, start + timedelta(minutes=minutes, seconds=5))


def materialize_view(instance, symbol: str):
    defs = build_definitions(load_settings())
    result = materialize(
        list(defs.assets),
        selection=[AssetKey("unified_view")],
        partition_key=symbol,
        instance=instance,
        resources=defs.resources,
    )
    assert result.success
    return result


def evaluations(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_unified_view_keeps_batch_precedence_and_continuous_averages_and_bounds_the_speed_layer(project_home, tmp_path):
    home = project_home()
    lake = home / "lake"
    # Batch layer: 40 closed days (2024-01-01 .. 02-09), written just after the last one ended.
    write_batch_layer(lake, pl.concat([history(s, 40) for s in SYMBOLS]), written=utc(2024, 2, 10, 0, 30))
    seam = START + timedelta(days=39)
    # Speed layer: batch 0 re-states the seam day (superseded), 1-2 stream the next days, each committed
    # (and logged) on its own day.
    write_microbatch(lake, 0, streamed(seam, 900.0, 0), committed=utc(2024, 2, 9, 23, 59))
    write_microbatch(lake, 1, streamed(seam + timedelta(days=1), 300.0, 1), committed=utc(2024, 2, 10, 0, 4))
    write_microbatch(lake, 2, streamed(seam + timedelta(days=2), 310.0, 2), committed=utc(2024, 2, 11, 0, 4))

    with instance_at(tmp_path / "dagster") as instance:
        result = materialize_view(instance, "BTCUSDT")
        checks = evaluations(result)
        assert set(checks) == {"schema", "one_row_per_day", "batch_precedence", "moving_averages_continuous"}
        assert all(e.passed for e in checks.values()), {k: e.description for k, e in checks.items() if not e.passed}

        view = read_view(lake, "BTCUSDT")
        assert view.height == 42
        assert view["source"].to_list() == ["batch"] * 40 + ["speed"] * 2
        batch = pl.read_parquet(lake / "daily_filled/symbol=BTCUSDT/year=2024/month=02/part-0.parquet")
        assert (
            view.filter(pl.col("date") == seam)["close"].item() == batch.filter(pl.col("date") == seam)["close"].item()
        )
        assert view["close"].to_list()[-2:] == [301.0, 311.0]
        closes = view["close"].to_numpy()
        for name, size in (("ma7", 7), ("ma30", 30)):
            assert abs(view[name][-1] - reference_moving_average(closes, size)[-1]) < 1e-9

        event = instance.get_latest_materialization_event(AssetKey("unified_view")).asset_materialization
        metadata = {k: v.value for k, v in event.metadata.items()}
        assert metadata["seam_date"] == str(seam)
        assert (metadata["batch_rows"], metadata["speed_rows"], metadata["rows"]) == (40, 2, 42)
        assert metadata["as_of"] == str(utc(2024, 2, 11, 0, 3, 5))
        assert {"preview", "path", "bytes_written"} <= set(metadata)

        # Compaction folded every logged batch but the newest into one file and dropped the superseded seam day.
        assert [i for i, _ in batch_dirs(lake, CANDLES_1M)] == [2] and [i for i, _ in batch_dirs(lake, DAILY)] == [2]
        compacted = pl.read_parquet(compacted_file(lake, CANDLES_1M))
        assert compacted["open_time"].dt.date().unique().to_list() == [seam + timedelta(days=1)]
        assert metadata["speed_batches_compacted"] == 2 and metadata["speed_rows_expired"] > 0
        # ETHUSDT's view is built from the same compacted state.
        materialize_view(instance, "ETHUSDT")
        assert read_view(lake, "ETHUSDT")["source"].to_list()[-2:] == ["speed", "speed"]

        # Rebuilding gives the same view.
        materialize_view(instance, "BTCUSDT")
        assert read_view(lake, "BTCUSDT").equals(view)

        # The batch layer catches up with the first streamed day: its value now wins, the speed rows it
        # supersedes expire, and the log days whose events it has closed go (never the newest).
        write_batch_layer(lake, pl.concat([history(s, 41) for s in SYMBOLS]), written=utc(2024, 2, 11, 1))
        result = materialize_view(instance, "BTCUSDT")
        assert all(e.passed for e in evaluations(result).values())
        view = read_view(lake, "BTCUSDT")
        assert view["source"].to_list() == ["batch"] * 41 + ["speed"]
        assert view.filter(pl.col("date") == seam + timedelta(days=1))["close"].item() != 301.0
        assert not compacted_file(lake, CANDLES_1M).exists()  # all it held is superseded now
        assert sorted(p.stem for p in log_dir(lake).glob("*.jsonl")) == ["2024-02-11"]
        assert [r.batch_id for r in read_records(lake)] == [2]


def test_one_run_refreshes_every_symbol_as_the_sensor_asks(project_home, tmp_path):
    from streaming_sensor.sensor import RANGE_END_TAG, RANGE_START_TAG

    home = project_home()
    lake = home / "lake"
    write_batch_layer(lake, pl.concat([history(s, 40) for s in SYMBOLS]), written=utc(2024, 2, 10, 0, 30))
    write_microbatch(lake, 0, streamed(START + timedelta(days=40), 300.0, 0), committed=utc(2024, 2, 10, 0, 4))
    with instance_at(tmp_path / "dagster") as instance:
        defs = build_definitions(load_settings())
        result = materialize(
            list(defs.assets),
            selection=[AssetKey("unified_view")],
            instance=instance,
            resources=defs.resources,
            tags={RANGE_START_TAG: SYMBOLS[0], RANGE_END_TAG: SYMBOLS[-1]},
        )
        assert result.success and len(instance.get_runs()) == 1
        assert instance.get_materialized_partitions(AssetKey("unified_view")) == set(SYMBOLS)
        for symbol in SYMBOLS:
            assert read_view(lake, symbol)["source"].to_list() == ["batch"] * 40 + ["speed"]
        checks = evaluations(result)
        assert set(checks) == {"schema", "one_row_per_day", "batch_precedence", "moving_averages_continuous"}
        assert all(e.passed for e in checks.values())
        assert all(e.metadata["judged_symbols"].value == ", ".join(SYMBOLS) for e in checks.values())
        event = instance.get_latest_materialization_event(AssetKey("unified_view")).asset_materialization
        metadata = {k: v.value for k, v in event.metadata.items()}
        assert (
            metadata["symbols"] == ", ".join(SYMBOLS)
            and metadata["speed_rows"] == 2
            and metadata["speed_batch_id"] == 0
        )
        assert all(f"| {s} |" in metadata["per_symbol"] for s in SYMBOLS)
        assert metadata["checks_evaluated"] is True

        # A routine refresh that leaves the checks to a later one ([serving] view_check_minutes) writes the
        # view and records no check result.
        unchecked = materialize(
            list(defs.assets),
            selection=AssetSelection.assets("unified_view").without_checks(),
            instance=instance,
            resources=defs.resources,
            tags={RANGE_START_TAG: SYMBOLS[0], RANGE_END_TAG: SYMBOLS[-1]},
        )
        assert unchecked.success and not evaluations(unchecked)
        event = instance.get_latest_materialization_event(AssetKey("unified_view"))
        assert event.run_id == unchecked.run_id
        assert event.asset_materialization.metadata["checks_evaluated"].value is False
