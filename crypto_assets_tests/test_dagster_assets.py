"""The batch asset graph through real Dagster machinery: a real instance, single-run range backfills,
asset checks, and the ``dagster`` CLI in a subprocess."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.dagster_home import write_dagster_yaml
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import REPO, instance_at

ASSETS = ["minute_raw", "daily_raw", "daily_filled", "prophet_input"]


def run_range(instance: DagsterInstance, first: str, last: str):
    return materialize_batch_range(instance, load_settings(), first, last)


def lake_digest(lake: Path) -> dict[str, str]:
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(lake.rglob("*.parquet"))
    }


def test_range_backfill_is_one_run_with_passing_checks_and_is_idempotent(shared_data, project_home, tmp_path):
    home = project_home([str(shared_data / "binance_spot_1m" / "2021")])
    with instance_at(tmp_path / "dagster") as instance:
        result = run_range(instance, "2021-03-01", "2021-09-01")
        assert result.success

        evaluations = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
        errors = [k for k, e in evaluations.items() if not e.passed and e.severity.value == "ERROR"]
        assert len(evaluations) == 16 and not errors  # 14 on the four datasets, 2 on exchange_backfill
        # The real 2021 data holds exchange outages: the completeness check must warn and list them.
        gaps = evaluations[("minute_raw", "minutes_complete")]
        assert not gaps.passed and gaps.severity.value == "WARN"
        assert gaps.metadata["missing_minutes"].value >= 150 + 284 + 270

        runs = instance.get_runs()
        assert len(runs) == 1, "a date-range backfill must run as a single run"
        materialized = instance.get_materialized_partitions(AssetKey("daily_filled"))
        assert materialized == {f"2021-{m:02d}-01" for m in range(3, 10)}

        event = instance.get_latest_materialization_event(AssetKey("minute_raw")).asset_materialization
        assert {"rows", "first", "last", "bytes_written", "preview"} <= set(event.metadata)
        assert event.metadata["rows"].value == 100_000

        lake = home / "lake"
        before = lake_digest(lake)
        assert run_range(instance, "2021-03-01", "2021-09-01").success
        assert lake_digest(lake) == before, "re-materializing the same range must give identical files"
        stored = [name for name in before if name.split("/")[0] in ASSETS]
        assert len(stored) == 4 * 4  # 4 datasets x (BTC Mar-Apr, ETH Aug-Sep)


def test_embedded_default_uses_the_seeded_synthetic_market(project_home, tmp_path):
    home = project_home(scale="tiny")
    with instance_at(tmp_path / "dagster") as instance:
        result = run_range(instance, "2025-11-01", "2025-12-01")
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey("minute_raw")).asset_materialization
        assert event.metadata["synthetic_default"].value is True
        assert event.metadata["duplicates_removed"].value > 0  # the generator injects duplicate rows
        prophet = pl.read_parquet(home / "lake/prophet_input/symbol=ETHUSDT/year=2025/month=12/part-0.parquet")
        assert prophet.columns == ["ds", "y", "symbol"] and prophet.height == 13


@pytest.mark.integration  # the dagster CLI in a subprocess
def test_dagster_cli_materializes_a_partition_range_in_a_subprocess(shared_data, project_home, tmp_path):
    home = project_home([str(shared_data / "binance_spot_1m" / "2023")])
    dagster_home = tmp_path / "dagster_home"
    write_dagster_yaml(dagster_home)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "crypto_assets.definitions",
        "--select",
        ",".join(ASSETS),
        "--partition-range",
        "2023-08-01...2023-11-01",
    ]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    with instance_at(dagster_home) as instance:
        assert len(instance.get_runs()) == 1
        for asset in ASSETS:
            partitions = instance.get_materialized_partitions(AssetKey(asset))
            assert partitions == {"2023-08-01", "2023-09-01", "2023-10-01", "2023-11-01"}, asset
    daily = pl.read_parquet(home / "lake/daily_raw/symbol=ETHUSDT/year=2023/month=10/part-0.parquet")
    assert daily["date"].min().isoformat() == "2023-10-07"


def test_an_in_process_run_leaves_sigterm_as_it_found_it(project_home, tmp_path):
    """Dagster maps SIGTERM to SIGINT's handler around a run; with SIGINT ignored (nohup, `&`) the process and
    every child it starts would then ignore SIGTERM."""
    project_home(scale="tiny")
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term = signal.getsignal(signal.SIGTERM)
    try:
        with instance_at(tmp_path / "dagster") as instance:
            assert run_range(instance, "2025-12-01", "2025-12-01").success
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, term)
