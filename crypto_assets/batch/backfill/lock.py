"""One writer of a lake's ``minute_raw`` at a time.

The ingest (the ``minute_raw`` asset, ``crypto-assets ingest``) and the exchange backfill (the
``exchange_backfill`` asset, ``crypto-assets backfill``) both rewrite ``minute_raw`` month partitions from what
they have just read, and the ingest reads what the backfill stored in ``exchange_minutes``. Two at once would each
write from a stale read and one's rows would be lost, so both hold an exclusive ``flock`` on
``<lake>/.minute_raw.lock`` for the whole read-modify-write.

A writer that finds the lock held waits for it, up to ``timeout`` seconds (default
:data:`LOCK_TIMEOUT_SECONDS`), and then raises :class:`LakeBusyError`, which names the lock file and its holder
(what, pid, since when). The kernel releases a ``flock`` when its holder dies, SIGKILL included, so a crashed
writer never leaves the lake locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from crypto_assets.lake.location import is_remote
from crypto_assets.lake.object_lock import describe, object_lock

LOCK_FILE = ".minute_raw.lock"
# Long enough for a daily refresh's ingest or a month's backfill to finish; a longer wait is an error that says
# who holds the lock, rather than a run that hangs.
LOCK_TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 0.2


class LakeBusyError(RuntimeError):
    """Another writer held the lake's ``minute_raw`` lock for longer than the wait allowed."""

    def __init__(self, message: str, lock_path: Path, holder: str):
        super().__init__(message)
        self.lock_path = lock_path
        self.holder = holder


def describe_holder(path: Path) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    return describe(info)


@contextmanager
def minute_raw_lock(
    lake: Path, what: str, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``<lake>/.minute_raw.lock`` for the block; ``what`` names this writer for others' messages.

    Waits up to ``timeout`` seconds (None: :data:`LOCK_TIMEOUT_SECONDS`; 0: not at all) for a writer that
    holds it, telling ``on_wait`` once that it waits and for whom; then raises :class:`LakeBusyError`.
    """
    timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
    path = lake / LOCK_FILE
    if is_remote(lake):
        with object_lock(
            path,
            what,
            timeout,
            on_wait and (lambda message: on_wait(f"minute_raw of {lake} is {message}")),
            lambda message, holder: LakeBusyError(f"minute_raw of {lake} is {message}", path, holder),
        ):
            yield
        return
    lake.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = describe_holder(path)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LakeBusyError(
                        f"minute_raw of {lake} is being written by {holder}; gave up waiting after {timeout:g} s "
                        f"(lock {path})",
                        path,
                        holder,
                    ) from None
                if on_wait is not None and not told:
                    on_wait(
                        f"minute_raw of {lake} is being written by {holder}; waiting up to {timeout:g} s (lock {path})"
                    )
                    told = True
                time.sleep(min(POLL_SECONDS, left))
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"what": what, "pid": os.getpid(), "since": since}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
