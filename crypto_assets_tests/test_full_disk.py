"""A full disk (ENOSPC) during an ingest, a micro-batch and a Dagster run: a clear error naming the file, no
partial file in the lake, and once space is freed the work completes with nothing lost and nothing duplicated
(the same files, byte for byte, as a run on a roomy disk).

Each case runs on a real small file system (a tmpfs) and again under a write hook, which stands in where
mounting is not permitted (:mod:`crypto_assets_tests.full_disk`)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.batch.synthetic import generate_dataset
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.lake.atomic import DiskFullError, append_line
from crypto_assets.lake.microbatch_log import read_records
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at, write_config
from crypto_assets_tests.full_disk import DISKS, lake_problems, run_cli, small_disk
from streaming_sensor.batch_writer import BatchWriter

FULL = "no space left on device (ENOSPC)"
PAGE = 4096  # a tmpfs hands out space in pages
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # the log's commit times, fixed so reruns write the same bytes


@pytest.fixture(params=DISKS)
def disk(request, tmp_path, monkeypatch):
    with small_disk(request.param, tmp_path, monkeypatch) as made:
        yield made


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but the ballast) by path: its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "ballast"
    }


def test_a_log_line_that_does_not_fit_is_cut_off_whole_and_the_next_append_is_a_whole_line(disk):
    log = disk.root / "log.jsonl"
    append_line(log, '{"n": 1}')
    disk.leave_free(100)  # on the tmpfs: no free page; the log's page has room for part of a line
    with pytest.raises(DiskFullError) as failed:
        append_line(log, '{"n": 2, "pad": "' + "x" * 6000 + '"}')
    assert str(log) in str(failed.value) and FULL in str(failed.value)
    assert log.read_bytes() == b'{"n": 1}\n', "the part of the line that fitted must be cut off again"
    disk.free_space()
    append_line(log, '{"n": 3}')
    assert log.read_bytes() == b'{"n": 1}\n{"n": 3}\n'


def test_a_line_a_crash_left_torn_is_removed_before_the_next_append(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"n": 1}\n{"n": 2, "to')
    append_line(log, '{"n": 3}')
    assert log.read_bytes() == b'{"n": 1}\n{"n": 3}\n'


# --- a micro-batch -------------------------------------------------------------------------------------------

BATCHES = 6
SYMBOLS = [f"SYM{i:02d}USDT" for i in range(10)]


WRITERS = {"quarantine", "candles_1m", "daily", "_log"}  # what a micro-batch writes, in that order


def batch_rows(batch_id: int) -> tuple[pl.DataFrame, dict]:
    """One micro-batch's output: 3 minutes of candles and a daily row per symbol; every third batch a bad
    message; offsets over 24 partitions, so the log's lines fill its first page before the last batch."""
    rng = random.Random(batch_id)
    start = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(minutes=3 * batch_id)
    candles = [
        {"kind": "candle", "symbol": s, "open_time": start + timedelta(minutes=m), "open": rng.random(),
         "high": 2.0, "low": 0.1, "close": rng.random(), "volume": rng.random() * 10, "is_closed": m < 2,
         "event_time": start + timedelta(minutes=m, seconds=59)}
        for s in SYMBOLS for m in range(3)
    ]  # fmt: skip
    daily = [
        {"kind": "daily", "symbol": s, "date": start.date(), "open": 1.0, "high": 2.0, "low": 0.1,
         "close": rng.random(), "volume": rng.random() * 100, "minute_count": 3 * batch_id + 3,
         "event_time": start + timedelta(minutes=2, seconds=59)}
        for s in SYMBOLS
    ]  # fmt: skip
    bad = [{"kind": "bad", "topic": "crypto.kline", "partition": 0, "offset": batch_id, "reason": "not JSON"}]
    rows = pl.DataFrame(candles + daily + (bad if batch_id % 3 == 0 else []), infer_schema_length=None)
    offsets = {"crypto.kline": {str(p): [100 * batch_id, 100 * batch_id + 100] for p in range(24)}}
    return rows, offsets


def write_batches(lake: Path, speed: Path, first: int) -> tuple[int, DiskFullError] | None:
    """Batches ``first``.. as the stream job writes them, in a new writer (a restarted job); where the disk
    fills up: (the batch, the error)."""
    writer = BatchWriter(lake, speed)
    for batch_id in range(first, BATCHES):
        rows, offsets = batch_rows(batch_id)
        try:
            writer.write(rows, batch_id, offsets, now=NOW)
        except DiskFullError as exc:
            return batch_id, exc
    return None


def test_a_full_disk_during_micro_batches_loses_and_duplicates_nothing(disk):
    reference = disk.root / "reference"
    footprint = disk.measure(lambda: write_batches(reference / "lake", reference / "speed", 0))
    expected = digest(reference)
    shutil.rmtree(reference)

    home = disk.root / "home"
    failed_in = set()
    # Fill the disk at every point of the work: each step leaves a page (or a part of the work) more free.
    step = max(disk.page, footprint // 40)
    for free in range(0, footprint + 2 * step, step):
        shutil.rmtree(home, ignore_errors=True)
        disk.leave_free(free)
        stopped = write_batches(home / "lake", home / "speed", 0)
        if stopped is None:
            assert free >= footprint // 2, "the work cannot fit in so little space"
            continue
        batch_id, error = stopped
        assert FULL in str(error) and str(error.filename).startswith(str(home)), error
        failed_in |= set(Path(error.filename).relative_to(home).parts) & WRITERS
        assert lake_problems(home) == []
        records = read_records(home / "lake")
        assert [r.batch_id for r in records] == list(range(batch_id)), "only whole batches are logged"

        disk.free_space()
        assert write_batches(home / "lake", home / "speed", batch_id) is None  # the job restarts at the batch
        assert digest(home) == expected, f"with {free:,} bytes free: the lake differs from a roomy disk's"
    assert stopped is None, "the last level must leave room for all the work"
    assert failed_in == WRITERS, f"the sweep filled the disk only in {failed_in}"


# --- an ingest -----------------------------------------------------------------------------------------------


def landed_state(home: Path) -> dict:
    """What an ingest leaves: the lake's and the landing folder's files, and the manifest but its clock times."""
    manifest = json.loads((home / "landing" / "manifest.json").read_text())
    entries = [{k: v for k, v in e.items() if k != "ingested_at"} for e in manifest["entries"]]
    landing = {k: v for k, v in digest(home / "landing").items() if k != "manifest.json"}
    return {"lake": digest(home / "lake"), "landing": landing, "manifest": entries}


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def written_dataset(error: str, home: Path) -> str:
    """Which folder of the home a full disk stopped: "landing", "synthetic", or the lake's dataset."""
    path = Path(error.split(" writing ", 1)[1].split(", which is left as it was")[0]).relative_to(home)
    return path.parts[1] if path.parts[0] == "lake" else path.parts[0]


def test_a_full_disk_during_an_ingest_says_which_file_and_the_rerun_completes_it(disk, tmp_path):
    files = [str(p) for p in generate_dataset(tmp_path / "source", scale="tiny")]
    ingest = ["ingest", *files]
    reference = disk.root / "reference"
    footprint = disk.measure(lambda: run_cli(disk, ["--home", str(reference), *ingest], tmp_path))
    expected = landed_state(reference)
    partitions = set(expected["lake"])
    shutil.rmtree(reference)

    home = disk.root / "home"
    failed_in, partial = set(), False
    for share in (0.25, 0.5, 0.9):  # of the space the ingest takes
        shutil.rmtree(home, ignore_errors=True)
        disk.leave_free(int(footprint * share))
        code, _, err = run_cli(disk, ["--home", str(home), *ingest], tmp_path)
        errors = error_lines(err)
        assert code in (1, 2) and errors and "Traceback" not in err, err
        assert all(FULL in line and f" writing {home}/" in line for line in errors), errors
        failed_in |= {written_dataset(line, home) for line in errors}
        assert lake_problems(home) == []
        written = set(digest(home / "lake"))
        partial |= 0 < len(written & partitions) < len(partitions)

        disk.free_space()
        code, _, err = run_cli(disk, ["--home", str(home), *ingest], tmp_path)
        assert code == 0, err
        assert landed_state(home) == expected, f"with {share:.0%} of the space: the lake differs from a roomy disk's"
    assert failed_in == {"landing", "minute_raw"}, failed_in
    assert partial, "no level filled the disk between two partitions of minute_raw"


# --- a Dagster run -------------------------------------------------------------------------------------------

LATER = ("lake/daily_raw", "lake/daily_filled", "lake/prophet_input")  # the datasets the run writes last


def run_batch_graph(home: Path, instance_dir: Path, monkeypatch):
    """The batch graph over the tiny synthetic market, in one run of a real Dagster instance."""
    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(write_config(home)))
    with instance_at(instance_dir) as instance:
        return materialize_batch_range(instance, load_settings(), "2025-11-01", "2025-12-01")


def run_files(home: Path) -> dict[str, str]:
    return {k: v for k, v in digest(home).items() if k != "crypto_assets.toml"}  # the config names its home


def test_a_full_disk_during_a_dagster_run_fails_the_run_with_the_file_and_the_rerun_completes_it(
    disk, tmp_path, monkeypatch
):
    monkeypatch.delenv("CRYPTO_ASSETS_HOME", raising=False)
    monkeypatch.setenv("CRYPTO_ASSETS_SYNTHETIC_SCALE", "tiny")
    # Dagster's own storage stays on a roomy disk: the run's failure is recorded, and the lake is under test.
    instance_dir = tmp_path / "dagster"
    reference = disk.root / "reference"
    footprint = disk.measure(lambda: run_batch_graph(reference, instance_dir, monkeypatch))
    expected = run_files(reference)
    downstream = sum(disk.space((reference / name).stat().st_size) for name in expected if name.startswith(LATER))
    shutil.rmtree(reference)

    home = disk.root / "home"
    failed_in = set()
    # Half the space: the seeded market's CSV; most of it: minute_raw; all but part of the last assets' files.
    for free in (footprint // 2, footprint * 8 // 10, footprint - downstream // 2):
        shutil.rmtree(home, ignore_errors=True)
        write_config(home)
        disk.leave_free(free)
        result = run_batch_graph(home, instance_dir, monkeypatch)
        assert not result.success
        (failure,) = result.get_step_failure_events()
        cause = failure.step_failure_data.error.cause  # the step's error is Dagster's wrapper around ours
        assert FULL in cause.message and f" writing {home}/" in cause.message, cause.message
        failed_in |= {failure.step_key, written_dataset(cause.message, home)}
        assert lake_problems(home) == []

        disk.free_space()
        assert run_batch_graph(home, instance_dir, monkeypatch).success
        assert run_files(home) == expected, f"with {free:,} bytes free: the lake differs from a roomy disk's"
    later = {name.split("/")[1] for name in LATER}
    assert "minute_raw" in failed_in and failed_in & later, failed_in  # the steps, and the datasets written
    if not disk.in_process:  # the write hook does not reach the CSV writer of the synthetic market
        assert "synthetic" in failed_in, failed_in


@pytest.mark.integration  # mounts a tmpfs
def test_a_full_disk_under_dagsters_own_storage_loses_nothing_from_the_lake(tmp_path, monkeypatch):
    """With DAGSTER_HOME on the same full disk, Dagster's SQLite storage may be the writer that fails: the run
    then ends with SQLite's error rather than ours, but the lake is whole and the rerun completes it."""
    monkeypatch.delenv("CRYPTO_ASSETS_HOME", raising=False)
    monkeypatch.setenv("CRYPTO_ASSETS_SYNTHETIC_SCALE", "tiny")
    with small_disk("tmpfs", tmp_path, monkeypatch) as disk:
        reference = disk.root / "reference"
        footprint = disk.measure(lambda: run_batch_graph(reference, reference / "dagster", monkeypatch))
        expected = {k: v for k, v in run_files(reference).items() if not k.startswith("dagster/")}
        shutil.rmtree(reference)

        home = disk.root / "home"
        write_config(home)
        disk.leave_free(footprint * 99 // 100)
        try:
            assert not run_batch_graph(home, home / "dagster", monkeypatch).success
        except Exception as exc:  # noqa: BLE001 - Dagster's storage failing is Dagster's error, of its kind
            assert "disk" in str(exc), exc
        assert lake_problems(home / "lake") == []

        disk.free_space()
        assert run_batch_graph(home, home / "dagster", monkeypatch).success
        files = {k: v for k, v in run_files(home).items() if not k.startswith("dagster/")}
        assert files == expected
