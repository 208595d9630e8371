"""The minute_raw lock of an ``s3://`` lake, on a real S3-compatible server: one holder at a time under
contention, a dead holder's lock broken once its lease runs out (by one breaker only), and a holder whose
lease was taken told so instead of carrying on silently."""

from __future__ import annotations

import json
import threading
import time

import pytest

from crypto_assets.batch.backfill.lock import LOCK_FILE, LakeBusyError, minute_raw_lock
from crypto_assets.lake.location import lake_root
from crypto_assets.lake.object_lock import LockLostError, _try_take, object_lock


@pytest.fixture
def lake(s3_lake):
    return lake_root(s3_lake)


def test_writers_contending_for_the_lock_hold_it_one_at_a_time(lake):
    counter = lake / "counter"
    counter.write_text("0")
    held: list[tuple[float, float]] = []

    def writer(name: str) -> None:
        for _ in range(4):
            with minute_raw_lock(lake, name, timeout=60):
                start = time.monotonic()
                value = int(counter.read_text())  # a read-modify-write that loses counts if two interleave
                time.sleep(0.02)
                counter.write_text(str(value + 1))
                held.append((start, time.monotonic()))

    threads = [threading.Thread(target=writer, args=(f"writer {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert int(counter.read_text()) == 16
    spans = sorted(held)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))
    assert not (lake / LOCK_FILE).exists()  # released


def stale_lock(lake, expires_in: float) -> None:  # noqa: ANN001
    info = {"what": "minute_raw ingest", "pid": 4242, "host": "elsewhere", "since": "2026-01-01 00:00:00 UTC"}
    (lake / LOCK_FILE).write_text(json.dumps(info | {"expires": time.time() + expires_in}))


def test_a_live_holder_makes_others_wait_and_then_fail_naming_it(lake):
    stale_lock(lake, expires_in=600)
    told = []
    with pytest.raises(LakeBusyError, match=r"minute_raw ingest \(pid 4242 on elsewhere") as error:
        with minute_raw_lock(lake, "backfill", timeout=0.6, on_wait=told.append):
            pass
    assert "pid 4242" in error.value.holder and len(told) == 1 and "waiting up to 0.6 s" in told[0]


def test_a_dead_holders_lock_is_broken_once_its_lease_has_run_out(lake):
    stale_lock(lake, expires_in=0.5)
    began = time.monotonic()
    with minute_raw_lock(lake, "rerun", timeout=30):
        waited = time.monotonic() - began
        holder = json.loads((lake / LOCK_FILE).read_text())
    assert holder["what"] == "rerun" and 0.3 < waited < 10


@pytest.mark.parametrize("attempt", range(3))
def test_of_two_writers_breaking_the_same_stale_lock_one_wins(lake, attempt):
    stale_lock(lake, expires_in=-1)
    barrier = threading.Barrier(2)
    won = []

    def breaker(name: str) -> None:
        barrier.wait()
        if _try_take(lake / LOCK_FILE, json.dumps({"what": name, "expires": time.time() + 60}).encode()):
            won.append(name)

    threads = [threading.Thread(target=breaker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert json.loads((lake / LOCK_FILE).read_text())["what"] == won[0]


def test_a_holder_whose_lease_was_taken_fails_instead_of_finishing_silently(lake):
    path = lake / "other.lock"
    with pytest.raises(LockLostError, match="lost the lock"):
        with object_lock(path, "slow writer", 5, None, LakeBusyError, lease=0.4):
            path.write_text(json.dumps({"what": "someone else"}))  # overwritten behind the holder's back
            time.sleep(0.5)  # the next renewal finds another version and gives up
    assert json.loads(path.read_text())["what"] == "someone else"  # and the holder leaves it alone
