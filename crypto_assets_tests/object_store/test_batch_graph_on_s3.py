"""The batch graph with the lake on a real S3-compatible server (moto's standalone server): the same files,
byte for byte, as the same run gives on local disk, each committed as one object."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at, write_config
from crypto_assets_tests.s3 import lake_objects

FIRST, LAST = "2025-11-01", "2025-12-01"


def local_files(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file()}


def remote_files(endpoint: str, lake_url: str) -> dict[str, bytes]:
    prefix = lake_url.removeprefix("s3://")
    return {key.removeprefix(prefix + "/"): data for key, data in lake_objects(endpoint, prefix).items()}


def run_graph(home: Path, tmp_path: Path, monkeypatch, name: str, extra: str = ""):  # noqa: ANN001
    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(write_config(home, extra=extra)))
    monkeypatch.setenv("CRYPTO_ASSETS_SYNTHETIC_SCALE", "tiny")
    settings = load_settings()
    with instance_at(tmp_path / name) as instance:
        result = materialize_batch_range(instance, settings, FIRST, LAST)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    return settings, checks


def test_the_batch_graph_on_s3_writes_the_files_local_disk_gets(tmp_path, monkeypatch, s3_endpoint, s3_lake):
    monkeypatch.delenv("CRYPTO_ASSETS_LAKE")
    local_settings, local_checks = run_graph(tmp_path / "local", tmp_path, monkeypatch, "dagster-local")
    expected = local_files(local_settings.lake_dir)
    assert any(k.startswith("prophet_input/") for k in expected)

    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", s3_lake)
    remote_settings, remote_checks = run_graph(tmp_path / "remote", tmp_path, monkeypatch, "dagster-remote")
    assert remote_settings.remote_lake
    assert not (tmp_path / "remote" / "lake").exists()  # nothing of the lake landed on local disk
    stored = remote_files(s3_endpoint, s3_lake)
    lock_files = {".minute_raw.lock"}
    assert set(stored) == set(expected) - lock_files
    for key, data in stored.items():
        assert data == expected[key], key
    assert remote_checks == local_checks and len(remote_checks) >= 10  # the same verdicts, check for check

    # Readers take the lake's URL as it is.
    month = "daily_filled/symbol=BTCUSDT/year=2025/month=12/part-0.parquet"
    assert pl.read_parquet(f"{s3_lake}/{month}").height == 13  # the synthetic market runs to 13 December


def test_with_an_s3_lake_the_code_location_offers_the_batch_and_forecast_graphs_only(project_home, s3_lake):
    from crypto_assets.definitions import build_definitions

    project_home()
    keys = {key.to_user_string() for key in build_definitions(load_settings()).resolve_all_asset_keys()}
    assert {"minute_raw", "daily_raw", "daily_filled", "prophet_input", "forecasts"} <= keys
    assert not keys & {"unified_view", "speed_microbatches"}
