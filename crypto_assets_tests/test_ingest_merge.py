"""Ingest is a merge: each way users fed the lake that once lost rows now keeps every good row, shown by row
counts; conflicts are decided by the order of ingests and kept visible; the lake rebuilds from the landing
area exactly."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.batch import landing as landing_module
from crypto_assets.batch.backfill.lock import minute_raw_lock
from crypto_assets.batch.landing import MANIFEST, Manifest
from crypto_assets.batch.minute_ingest import CONFLICTS_DATASET, ingest_files, rebuild_minute_raw
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.lake.atomic import TEMP_PREFIX

SYMBOL = "BTCUSDT"
HEADER = "timestamp,open,high,low,close,volume"


def recording(shared_data: Path) -> Path:
    return shared_data / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv"


def ingest(home: Path, *paths: Path, **kwargs):
    files = [SourceFile(p, SYMBOL, i) for i, p in enumerate(paths)]
    return ingest_files(files, home / "lake", home / "landing", [SYMBOL], **kwargs)


def stored(home: Path) -> pl.DataFrame:
    files = sorted((home / "lake/minute_raw").rglob("*.parquet"))
    return pl.read_parquet(files) if files else pl.DataFrame()


def conflicts(home: Path) -> pl.DataFrame:
    files = sorted((home / "lake" / CONFLICTS_DATASET).rglob("*.parquet"))
    return pl.read_parquet(files) if files else pl.DataFrame()


def aged(path: Path) -> Path:
    """A file finished a while ago, as most ingested files are (a fresh one is watched for a second)."""
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return aged(path)


def test_a_small_ingest_adds_to_its_month_and_deletes_nothing(shared_data, tmp_path):
    home = tmp_path / "home"
    assert ingest(home, recording(shared_data)).minute.rows == 50_000
    two = write_csv(
        tmp_path / "BTCUSDT_fix.csv",
        "2021-03-26 03:00:00,51696.7,51926.17,51696.7,51827.72,73.9024",  # the same as the recording
        "2021-03-26 03:01:00,51826.95,51842.84,51724.7,51761.1,99.0",  # a corrected volume
    )
    result = ingest(home, two)
    lake = stored(home)
    assert lake.height == 50_000, "every minute of March after 03:01 must still be there"
    assert lake.filter(pl.col("open_time") == datetime(2021, 3, 26, 3, 1, tzinfo=UTC))["volume"].to_list() == [99.0]
    assert result.conflicts.height == 1
    (lost,) = conflicts(home).iter_rows(named=True)
    assert (
        lost["volume"] == 21.689789
        and lost["source"].startswith("ingest #1: ")
        and lost["kept_source"].startswith("ingest #2: ")
    )
    assert str(recording(shared_data)) in lost["source"] and str(two) in lost["kept_source"]


def test_the_landing_copy_is_independent_of_the_users_file(shared_data, tmp_path):
    home = tmp_path / "home"
    original = aged(Path(shutil.copy(recording(shared_data), tmp_path / "BTCUSDT_1m.csv")))
    ingest(home, original)
    manifest = Manifest.load(home / "landing")
    (entry,) = manifest.entries
    copy = manifest.path_of(entry)
    assert copy.stat().st_ino != original.stat().st_ino and copy.stat().st_nlink == 1
    assert (entry.size, entry.rows, entry.order) == (original.stat().st_size, 50_000, 1)

    # The user overwrites the original in place with its first 1,000 lines, then ingests another file.
    head = original.read_text().splitlines()[:1001]
    with original.open("r+") as handle:
        handle.truncate(0)
        handle.write("\n".join(head) + "\n")
    assert landing_module._hash_file(copy) == (entry.sha256, entry.size)
    later = write_csv(tmp_path / "BTCUSDT_later.csv", "2021-04-10 00:00:00,1,1,1,1,1")
    ingest(home, later)
    assert stored(home).height == 50_000

    # Ingesting the truncated original is a new ingest: it replaces nothing it does not hold.
    aged(original)
    result = ingest(home, original)
    assert not result.landed[0].already and stored(home).height == 50_000
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(home / "landing", rebuilt / "landing")
    rebuild_minute_raw(rebuilt / "lake", rebuilt / "landing", [SYMBOL])
    assert stored(rebuilt).equals(stored(home)), "the landing area rebuilds the same lake"


def test_ingests_queued_behind_the_lock_keep_each_others_rows(shared_data, tmp_path):
    home = tmp_path / "home"
    lines = recording(shared_data).read_text().splitlines()[1:]
    first = write_csv(tmp_path / "BTCUSDT_a.csv", *lines[:30_000])
    second = write_csv(tmp_path / "BTCUSDT_b.csv", *lines[20_000:])
    outcomes: dict[str, object] = {}
    waiting = threading.Barrier(3)

    def run(name: str, path: Path) -> None:
        def on_wait(_: str) -> None:
            waiting.wait(60)

        try:
            outcomes[name] = ingest(home, path, lock_timeout=120, on_wait=on_wait)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcomes[name] = exc

    with minute_raw_lock(home / "lake", "exchange backfill"):
        workers = [threading.Thread(target=run, args=(n, p)) for n, p in (("a", first), ("b", second))]
        for worker in workers:
            worker.start()
        waiting.wait(60)  # both ingests are queued behind the held lock
        assert not (home / "landing").exists(), "nothing is landed before the lock is taken"
    for worker in workers:
        worker.join(120)
    assert not any(isinstance(o, BaseException) for o in outcomes.values()), outcomes
    assert stored(home).height == 50_000
    assert sorted(e.order for e in Manifest.load(home / "landing").entries) == [1, 2]


def test_a_file_still_being_written_is_a_consistent_snapshot_with_a_warning(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(landing_module, "QUIET_SECONDS", 0.2)
    home = tmp_path / "home"
    source = recording(shared_data).read_bytes()
    growing = tmp_path / "BTCUSDT_growing.csv"
    growing.write_bytes(source[:100_000])
    stop = threading.Event()

    def writer() -> None:
        with growing.open("ab") as handle:
            for offset in range(100_000, len(source), 20_000):
                handle.write(source[offset : offset + 20_000])
                handle.flush()
                time.sleep(0.01)
                if stop.is_set():
                    break
            handle.write(b"")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = ingest(home, growing)
    finally:
        stop.set()
        thread.join(60)
    (landed,) = result.landed
    assert landed.warning and "changed while it was read" in landed.warning
    partial = stored(home).height
    entry = landed.entry
    assert 0 < partial and entry.rows is not None and entry.rows >= partial
    copy = Manifest.load(home / "landing").path_of(entry)
    assert landing_module._hash_file(copy) == (entry.sha256, entry.size), "the copy is exactly what was ingested"

    # Once complete, ingesting it again brings the rest; nothing from the snapshot is lost.
    growing.write_bytes(source)
    aged(growing)
    ingest(home, growing)
    assert stored(home).height == 50_000


def test_conflicts_follow_the_order_of_ingests_not_file_names(tmp_path):
    home = tmp_path / "home"
    zebra = write_csv(
        tmp_path / "BTCUSDT_zebra.csv", "2021-03-26 03:00:00,10,12,9,11,1", "2021-03-26 03:01:00,11,12,10,11,2"
    )
    alpha = write_csv(tmp_path / "BTCUSDT_alpha.csv", "2021-03-26 03:01:00,11,13,10,12,3")
    ingest(home, zebra)
    result = ingest(home, alpha)
    assert stored(home)["volume"].to_list() == [1.0, 3.0]
    assert result.conflicts.height == 1
    assert "kept ingest #2: " in result.conflict_summary() and str(alpha) in result.conflict_summary()
    (row,) = conflicts(home).iter_rows(named=True)
    assert row["volume"] == 2.0 and str(zebra) in row["source"] and str(alpha) in row["kept_source"]

    # An identical re-ingest of the loser is a no-op: the later ingest still wins.
    again = ingest(home, zebra)
    assert again.landed[0].already and stored(home)["volume"].to_list() == [1.0, 3.0]
    # The same rows given again by a new ingest win again.
    edited = write_csv(tmp_path / "BTCUSDT_zebra2.csv", "2021-03-26 03:01:00,11,12,10,11,2")
    ingest(home, edited)
    assert stored(home)["volume"].to_list() == [1.0, 2.0]
    assert conflicts(home).height == 2


def test_stray_temporary_files_of_a_killed_writer_are_removed_under_the_lock(tmp_path):
    home = tmp_path / "home"
    first = write_csv(tmp_path / "BTCUSDT_a.csv", "2021-03-26 03:00:00,10,12,9,11,1")
    ingest(home, first)
    strays = [
        home / "lake/minute_raw/symbol=BTCUSDT/year=2021/month=03" / f"{TEMP_PREFIX}part-0.parquet.1.x",
        home / "landing" / f"{TEMP_PREFIX}BTCUSDT.1.x",
    ]
    for stray in strays:
        stray.write_bytes(b"half")
    result = ingest(home, write_csv(tmp_path / "BTCUSDT_b.csv", "2021-03-26 03:01:00,10,12,9,11,1"))
    assert result.stray_temps_removed == 2 and not any(s.exists() for s in strays)
    assert stored(home).height == 2 and (home / "landing" / MANIFEST).is_file()


@pytest.mark.parametrize("bad", ["", "date,o,h,l,c,v\n1,2,3,4,5,6\n"])
def test_an_unreadable_file_is_not_landed_and_its_neighbours_are(tmp_path, bad):
    home = tmp_path / "home"
    broken = tmp_path / "BTCUSDT_broken.csv"
    broken.write_text(bad)
    aged(broken)
    good = write_csv(tmp_path / "BTCUSDT_good.csv", "2021-03-26 03:00:00,10,12,9,11,1")
    result = ingest(home, broken, good)
    assert [bool(s.error) for s in result.sources if s.path.endswith(".csv")][:1] == [True]
    assert str(broken) in result.failed_sources[0].error
    assert [e.original for e in Manifest.load(home / "landing").entries] == [str(good)]
    assert stored(home).height == 1


def test_the_minute_raw_asset_shows_conflicts_in_its_metadata_and_sources_clean(project_home, tmp_path):
    from dagster import materialize

    from crypto_assets.definitions import build_definitions
    from crypto_assets.settings import load_settings
    from crypto_assets_tests.conftest import instance_at

    home = project_home()
    ingest(
        home,
        write_csv(tmp_path / "BTCUSDT_b.csv", "2021-03-26 03:00:00,10,12,9,11,1", "2021-03-26 03:01:00,11,12,10,11,2"),
    )
    ingest(home, write_csv(tmp_path / "BTCUSDT_a.csv", "2021-03-26 03:01:00,11,13,10,12,3"))
    defs = build_definitions(load_settings())
    assets = [a for a in defs.assets if a.key.to_user_string() == "minute_raw"]
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize(assets, instance=instance, resources=defs.resources, partition_key="2021-03-01")
    assert result.success
    assert stored(home)["volume"].to_list() == [1.0, 3.0], "the later ingest wins, whatever the file names"
    metadata = result.asset_materializations_for_node("minute_raw")[0].metadata
    assert metadata["conflicts"].value == 1 and "kept ingest #2: " in metadata["conflicts_by_source"].value
    (clean,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "sources_clean"]
    assert not clean.passed and clean.metadata["conflicts"].value == 1
    assert conflicts(home).height == 1  # materializing again records the same losing version once
