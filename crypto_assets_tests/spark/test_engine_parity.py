"""Both batch engines on the real Binance data: the same rows and the same files, through the pipeline steps
and through a Dagster range run on a real instance.

Bit-for-bit equality holds for every column because neither engine's summation order reaches the result: on
this data a plain Spark ``sum`` and Polars ``sum`` disagree in the last bits on 60 of 212 daily volumes, and
Spark's windowed ``avg`` and Polars' ``rolling_mean`` on 1,230 of 1,684 MA30 values.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey
from polars.testing import assert_frame_equal
from pyspark.sql import SparkSession

from crypto_assets.asset_names import DAILY_FILLED, DAILY_RAW, MINUTE_RAW, PROPHET_INPUT
from crypto_assets.batch import checks
from crypto_assets.batch.minute_ingest import ingest_window
from crypto_assets.batch.pipeline import POLARS, build_daily_filled, build_daily_raw, build_prophet_input
from crypto_assets.batch.sources.discovery import discover_sources
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.definitions import build_definitions
from crypto_assets.settings import SourceSpec, load_settings
from crypto_assets.spark.engine import SparkEngine
from crypto_assets_tests.conftest import instance_at, write_config

pytestmark = pytest.mark.slow  # a Spark session, the real data on both engines and two Dagster runs

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START, END = datetime(2021, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
DATASETS = (MINUTE_RAW, DAILY_RAW, DAILY_FILLED, PROPHET_INPUT)
STEPS = (build_daily_raw, build_daily_filled, build_prophet_input)


def digests(lake: Path) -> dict[str, str]:
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(lake.rglob("*.parquet"))
    }


def float_bits(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        name: frame[name].fill_null(np.nan).to_numpy().view(np.int64)
        for name, dtype in frame.schema.items()
        if dtype == pl.Float64
    }


def assert_identical(polars_frame: pl.DataFrame, spark_frame: pl.DataFrame) -> None:
    assert_frame_equal(spark_frame, polars_frame, check_exact=True)
    for name, bits in float_bits(polars_frame).items():
        assert (bits == float_bits(spark_frame)[name]).all(), name


@pytest.fixture(scope="module")
def lakes(shared_data, spark, tmp_path_factory):
    """All six minute files ingested once (Polars ingest), then every step on each engine in its own lake."""
    root = tmp_path_factory.mktemp("parity")
    sources, problems = discover_sources([SourceSpec(str(shared_data / "binance_spot_1m"))], SYMBOLS)
    assert not problems and len(sources) == 6
    ingest = ingest_window(sources, root / "polars", SYMBOLS, START, END)
    assert ingest.quarantined == 0 and ingest.minute.rows == 300_000
    shutil.copytree(root / "polars" / MINUTE_RAW, root / "spark" / MINUTE_RAW)
    engines = {"polars": POLARS, "spark": SparkEngine(spark)}
    results = {
        name: [step(root / name, SYMBOLS, START, END, engine) for step in STEPS] for name, engine in engines.items()
    }
    return root, engines, results


def test_both_engines_give_identical_rows_and_files_for_the_whole_history(lakes):
    root, _, results = lakes
    for polars_step, spark_step in zip(results["polars"], results["spark"], strict=True):
        assert polars_step.frame.height > 0
        assert_identical(polars_step.frame, spark_step.frame)
        if polars_step.context is not None:  # daily_filled's rows with the look-back, which its checks read
            assert_identical(polars_step.context, spark_step.context)
    polars_files, spark_files = digests(root / "polars"), digests(root / "spark")
    # minute_raw and daily_raw: 6 files of 2 months each; the filled calendar and prophet_input run on
    # through every month from a symbol's first candle to its last (BTC 31 months, ETH 28).
    assert len(spark_files) == 2 * 12 + 2 * (31 + 28)
    assert spark_files == polars_files


def test_spark_daily_candles_equal_the_exchange_and_moving_averages_the_reference(lakes, shared_data):
    _, _, results = lakes
    daily, filled = results["spark"][0].frame, results["spark"][1]
    complete = daily.filter(pl.col("minute_count") == 1440)
    compared = 0
    for symbol in SYMBOLS:
        oracle = pl.read_csv(shared_data / "binance_spot_1d" / f"{symbol}_1d.csv", try_parse_dates=True)
        joined = complete.filter(pl.col("symbol") == symbol).join(oracle.rename({"timestamp": "date"}), on="date")
        for column in ("open", "high", "low", "close"):
            assert (joined[column] == joined[f"{column}_right"]).all(), f"{symbol} {column}"
        ours, exchange = joined["volume"].to_numpy(), joined["volume_right"].to_numpy()
        # The exchange's volume is the exact decimal sum; ours the exact sum of the parsed minute values,
        # rounded once: they are at most one unit in the last place apart.
        assert (np.abs(ours - exchange) <= 1e-8).all() and (np.abs(ours - exchange) <= np.spacing(exchange)).all()
        compared += joined.height
    assert compared >= 180
    assert checks.moving_averages_correct(filled.context, START.date()).passed
    assert checks.no_missing_days(filled.context).passed


def test_a_single_month_looks_back_the_same_on_both_engines(lakes):
    root, engines, results = lakes
    # ETH's file runs 1 Dec 2022 - 4 Jan 2023: January's MA30 needs December, read through the look-back,
    # and the rest of January is forward-filled because the series goes on later.
    start, end = datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC)
    month = {name: build_daily_filled(root / name, SYMBOLS, start, end, engine) for name, engine in engines.items()}
    assert_identical(month["polars"].frame, month["spark"].frame)
    january = pl.col("date").is_between(date(2023, 1, 1), date(2023, 1, 31)) & (pl.col("symbol") == "ETHUSDT")
    assert_identical(results["spark"][1].frame.filter(january), month["spark"].frame.filter(january))
    assert month["spark"].frame.filter(january).height == 31
    assert month["spark"].frame["ma30"].null_count() == 0 < month["spark"].frame.height


def materialize_with_engine(engine: str, shared_data: Path, home: Path, monkeypatch) -> None:
    config = write_config(home, [str(shared_data / "binance_spot_1m" / "2021")], f'[spark]\nengine = "{engine}"\n')
    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(config))
    monkeypatch.delenv("CRYPTO_ASSETS_HOME", raising=False)
    settings = load_settings()
    assert settings.spark.engine == engine
    defs = build_definitions(settings)
    for asset in ("minute_raw", "daily_filled"):  # minute_raw's merge runs on the engine too
        kinds = defs.get_assets_def(asset).specs_by_key[AssetKey(asset)].kinds
        assert engine in kinds and "parquet" in kinds
    (home / "dagster").mkdir()
    with instance_at(home / "dagster") as instance:
        result = materialize_batch_range(instance, settings, "2021-03-01", "2021-09-01")
        assert result.success
        errors = [e for e in result.get_asset_check_evaluations() if not e.passed and e.severity.value == "ERROR"]
        assert not errors
        assert len(instance.get_runs()) == 1
        for asset in ("daily_raw", "daily_filled", "prophet_input"):
            event = instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization
            assert event.metadata["engine"].value == engine
        assert instance.get_materialized_partitions(AssetKey("prophet_input")) == {
            f"2021-{m:02d}-01" for m in range(3, 10)
        }


def test_dagster_range_run_on_spark_writes_the_files_the_polars_engine_writes(
    shared_data, spark, tmp_path, monkeypatch
):
    materialize_with_engine("spark", shared_data, tmp_path / "spark_home", monkeypatch)

    def no_spark(*_args, **_kwargs):
        raise AssertionError("the Polars engine must not start a Spark session")

    # With engine = polars nothing may ask for a session (a fresh one costs seconds).
    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", no_spark)
    materialize_with_engine("polars", shared_data, tmp_path / "polars_home", monkeypatch)

    spark_files = {k: v for k, v in digests(tmp_path / "spark_home" / "lake").items() if k.split("/")[0] in DATASETS}
    polars_files = {k: v for k, v in digests(tmp_path / "polars_home" / "lake").items() if k.split("/")[0] in DATASETS}
    assert len(spark_files) == 4 * 4  # 4 datasets x (BTC Mar-Apr, ETH Aug-Sep)
    assert spark_files == polars_files
