"""The crypto-assets command line: generate, ingest and demo, as a user runs them."""

from __future__ import annotations

import re

import polars as pl
from dagster import AssetKey

from crypto_assets.cli import main
from crypto_assets.forecast.options import DEFAULT_OPTIONS
from crypto_assets_tests.conftest import instance_at


def test_generate_writes_the_seeded_kaggle_csv(tmp_path, project_home):
    home = project_home()
    assert main(["generate", "--scale", "tiny", "--out", str(tmp_path / "out")]) == 0
    header = (tmp_path / "out" / "BTCUSDT_kaggle_1m.csv").read_text().splitlines()[0]
    assert header == "Timestamp,Open,High,Low,Close,Volume"
    assert not (home / "lake").exists()


def test_ingest_adds_good_files_and_names_the_broken_one(tmp_path, project_home, shared_data, capsys):
    home = project_home()
    broken = tmp_path / "ETHUSDT_broken.csv"
    broken.write_text("date,o,h,l,c,v\n2021-01-01,1,1,1,1,1\n")
    code = main(["ingest", str(shared_data / "binance_spot_1m" / "2022"), str(broken)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{broken}:1: header: unrecognised header" in captured.err
    assert "minute_raw: 100,000 rows" in captured.out
    landed = sorted(p.name for p in (home / "landing").iterdir())
    assert landed[-1] == "manifest.json"
    assert len(landed) == 3 and all(n.split("__")[0] in {"BTCUSDT", "ETHUSDT"} for n in landed[:-1])
    stored = pl.scan_parquet(str(home / "lake/minute_raw/symbol=ETHUSDT/**/*.parquet")).collect()
    assert stored.height == 50_000

    # Ingesting the same file again stores it once, says so and leaves the lake as it was.
    again = shared_data / "binance_spot_1m" / "2022" / "ETHUSDT_1m.csv"
    assert main(["ingest", str(again)]) == 0
    assert f"{again}: already ingested (ingest #" in capsys.readouterr().out
    assert sorted(p.name for p in (home / "landing").iterdir()) == landed
    assert pl.scan_parquet(str(home / "lake/minute_raw/symbol=ETHUSDT/**/*.parquet")).collect().equals(stored)


def test_demo_materializes_the_whole_history_in_one_run(project_home, monkeypatch, tmp_path, capsys):
    home = project_home(scale="tiny")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert main(["demo"]) == 0
    # The tiny market's six weeks are too short for the forecasts' cross-validation: said, not failed.
    out = capsys.readouterr().out
    needed = DEFAULT_OPTIONS.min_history_days()
    assert re.search(rf"BTCUSDT: skipped, 4\d days of history; cross-validation needs {needed}", out), out
    with instance_at(tmp_path / "dagster") as instance:
        assert len(instance.get_runs()) == 1
        partitions = instance.get_materialized_partitions(AssetKey("prophet_input"))
        # The months start at the synthetic market's first (2025-11), not at the configured 2012.
        assert min(partitions) == "2025-11-01" and "2025-12-01" in partitions
    assert (home / "lake/daily_filled/symbol=BTCUSDT/year=2025/month=11/part-0.parquet").is_file()
