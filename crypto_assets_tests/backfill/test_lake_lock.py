"""The ingest and the exchange backfill share the lake's minute_raw lock: they never interleave, a writer waits
for the other (bounded), a wait that runs out names the holder, and the exchange_backfill asset reports it as a
failed check instead of a crashed step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

import polars as pl
import pytest
from dagster import materialize

import crypto_assets.batch.backfill.lock as lock_module
from crypto_assets.batch.backfill.fill import BackfillBusyError, backfill_window
from crypto_assets.batch.backfill.lock import LOCK_FILE, LakeBusyError, minute_raw_lock
from crypto_assets.batch.minute_ingest import ingest_window
from crypto_assets.batch.sources.discovery import discover_sources
from crypto_assets.settings import SourceSpec, load_settings
from crypto_assets_tests.backfill.conftest import (
    LAKE_WINDOW,
    START,
    SYMBOL,
    april,
    punch_hole,
    recording,
)
from crypto_assets_tests.conftest import REPO, instance_at


class NoExchange:
    """A kline source that must not be asked: the lock comes first."""

    def klines(self, *args, **kwargs):
        raise AssertionError("the exchange was asked while another writer held the lock")


def sources(shared_data):
    found, problems = discover_sources([SourceSpec(str(recording(shared_data)))], [SYMBOL])
    assert not problems
    return found


def test_an_ingest_waits_for_a_running_backfill_then_writes(shared_data, tmp_path):
    lake = tmp_path / "lake"
    waiting = threading.Event()
    told: list[str] = []
    outcome: dict[str, object] = {}

    def on_wait(message: str) -> None:
        told.append(message)
        waiting.set()

    def ingest() -> None:
        try:
            outcome["result"] = ingest_window(
                sources(shared_data), lake, [SYMBOL], *LAKE_WINDOW, lock_timeout=120, on_wait=on_wait
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    with minute_raw_lock(lake, "exchange backfill"):
        worker = threading.Thread(target=ingest)
        worker.start()
        assert waiting.wait(60), "the ingest did not wait for the lock"
        assert not (lake / "minute_raw").exists()  # nothing written while the backfill holds the lake
    worker.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].minute.rows == 50_000 and april(lake).is_file()
    assert f"exchange backfill (pid {os.getpid()}" in told[0] and str(lake / LOCK_FILE) in told[0]


def test_an_ingest_that_cannot_get_the_lock_in_time_names_the_holder_and_writes_nothing(shared_data, tmp_path):
    lake = tmp_path / "lake"
    with minute_raw_lock(lake, "exchange backfill"), pytest.raises(LakeBusyError) as error:
        ingest_window(sources(shared_data), lake, [SYMBOL], *LAKE_WINDOW, lock_timeout=0)
    message = str(error.value)
    assert f"minute_raw of {lake} is being written by exchange backfill (pid {os.getpid()}" in message
    assert str(lake / LOCK_FILE) in message
    assert not (lake / "minute_raw").exists()


def test_a_backfill_waits_for_a_running_ingest(original_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(original_lake, lake)
    punch_hole(lake)
    before = pl.read_parquet(april(lake))
    with minute_raw_lock(lake, "minute_raw ingest"), pytest.raises(BackfillBusyError) as error:
        backfill_window(lake, {SYMBOL: START}, NoExchange(), *LAKE_WINDOW, lock_timeout=0)
    assert "being written by minute_raw ingest" in str(error.value)
    assert pl.read_parquet(april(lake)).equals(before)
    assert not (lake / "exchange_minutes").exists()


@pytest.mark.integration  # the lock's holder is a child process
def test_a_killed_holder_leaves_the_lake_unlocked(tmp_path):
    lake = tmp_path / "lake"
    code = (
        "import sys, time; from pathlib import Path; from crypto_assets.batch.backfill.lock import minute_raw_lock\n"
        "with minute_raw_lock(Path(sys.argv[1]), 'exchange backfill'):\n    print('held', flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(lake)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LakeBusyError) as error:
            with minute_raw_lock(lake, "minute_raw ingest", timeout=0):
                pass
        assert f"pid {holder.pid}" in str(error.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        with minute_raw_lock(lake, "minute_raw ingest", timeout=0):
            assert "minute_raw ingest" in (lake / LOCK_FILE).read_text()
    finally:
        holder.kill()
        holder.wait(30)
        holder.stdout.close()
    assert (lake / LOCK_FILE).read_text() == ""  # the holder's note goes with the lock


def test_a_busy_lake_is_a_failed_check_of_exchange_backfill_not_a_crashed_step(project_home, tmp_path, monkeypatch):
    from crypto_assets.definitions import build_definitions

    home = project_home(extra='[exchange]\nrest_url = "http://127.0.0.1:9"\n')  # never reached: the lock comes first
    monkeypatch.setattr(lock_module, "LOCK_TIMEOUT_SECONDS", 0.0)
    defs = build_definitions(load_settings())
    assets = [a for a in defs.assets if a.key.to_user_string() == "exchange_backfill"]
    with instance_at(tmp_path / "dagster") as instance, minute_raw_lock(home / "lake", "minute_raw ingest"):
        result = materialize(
            assets, instance=instance, resources=defs.resources, partition_key="2026-01-01", raise_on_error=False
        )
        assert result.success
        (filled,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "gaps_filled"]
        assert not filled.passed and filled.severity.value == "ERROR"
        assert "lake busy" in filled.description and "being written by minute_raw ingest" in filled.description
        metadata = result.asset_materializations_for_node("exchange_backfill")[0].metadata
        assert metadata["error"].value.startswith("lake busy") and "minute_raw ingest" in metadata["lock_holder"].value
        assert "covered_until" not in metadata  # the schedule will ask for this window again
        logged = [r for r in instance.all_logs(result.run_id) if "exchange backfill did not run" in r.user_message]
        assert logged and logged[0].level >= 40  # logged as an error, naming the holder
        assert "minute_raw ingest (pid" in logged[0].user_message
    assert not (home / "lake/exchange_minutes").exists()
