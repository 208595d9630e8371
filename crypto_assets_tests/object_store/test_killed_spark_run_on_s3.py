"""A Spark run on an ``s3://`` lake SIGKILLed at the worst moment, with month objects staged by the executors
and not yet committed: the rerun removes the staged objects and leaves the lake an uninterrupted run leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from crypto_assets.lake.atomic import TEMP_PREFIX
from crypto_assets.lake.object_lock import LEASE_VARIABLE
from crypto_assets_tests.conftest import REPO, write_config
from crypto_assets_tests.object_store.test_batch_graph_on_s3 import FIRST, LAST, local_files, remote_files, run_graph
from crypto_assets_tests.object_store.test_killed_run_on_s3 import RUN
from crypto_assets_tests.object_store.test_spark_on_s3 import SPARK
from crypto_assets_tests.s3 import server_filesystem

pytestmark = pytest.mark.slow  # a Spark session in a child process, then a rerun


def test_a_spark_run_killed_with_months_staged_then_rerun_loses_and_duplicates_nothing(
    tmp_path, monkeypatch, s3_endpoint, s3_lake
):
    monkeypatch.delenv("CRYPTO_ASSETS_LAKE")
    reference, _ = run_graph(tmp_path / "reference", tmp_path, monkeypatch, "dagster-reference")
    expected = {k: v for k, v in local_files(reference.lake_dir).items() if not k.startswith(".")}

    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", s3_lake)
    monkeypatch.setenv(LEASE_VARIABLE, "4")
    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(write_config(tmp_path / "home", extra=SPARK)))
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, str(tmp_path / "dagster-killed"), FIRST, LAST],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,  # its Spark JVM and Python workers die with it
    )
    bucket = server_filesystem(s3_endpoint)
    prefix = s3_lake.removeprefix("s3://")
    try:
        deadline = time.monotonic() + 240
        while not [k for k in bucket.find(prefix) if k.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]:
            assert process.poll() is None, "the run ended before staging a month"
            assert time.monotonic() < deadline, "no month was staged in time"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    left = remote_files(s3_endpoint, s3_lake)
    assert any(key.rsplit("/", 1)[-1].startswith(TEMP_PREFIX) for key in left)  # killed with months staged
    assert ".minute_raw.lock" in left  # and the lock held

    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(write_config(tmp_path / "home")))  # the rerun: Polars
    run_graph(tmp_path / "home", tmp_path, monkeypatch, "dagster-rerun")
    stored = remote_files(s3_endpoint, s3_lake)
    assert stored.keys() == expected.keys()
    assert [key for key in stored if stored[key] != expected[key]] == []
