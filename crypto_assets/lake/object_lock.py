"""An exclusive lock kept as one object on object storage, for writers that share no file system.

It is taken with a conditional PUT (``If-None-Match: *``) that exactly one writer can win. The object says who
holds it and until when its lease runs; the holder renews the lease in the background with a conditional
overwrite (``If-Match`` its own version). A writer killed with the lock held stops renewing, so once the lease
has run out another writer may break it, again with a conditional overwrite of the stale version: of two
writers breaking the same stale lock, one wins. The holder deletes the object when it is done.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

LEASE_SECONDS = 60.0  # a killed holder blocks others this long at most; renewed every quarter of it
LEASE_VARIABLE = "CRYPTO_ASSETS_LAKE_LOCK_LEASE_SECONDS"
POLL_SECONDS = 0.5


class LockLostError(RuntimeError):
    """The holder could not renew its lease in time, and another writer may have taken the lock."""


def _body(what: str, lease: float) -> bytes:
    now = time.time()
    since = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    info = {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "since": since, "expires": now + lease}
    return json.dumps(info).encode()


def read_holder(path: Any) -> tuple[dict, str | None]:
    """What the lock object says and its version (ETag); ``({}, None)`` when there is no lock."""
    try:
        etag = path.fs.info(path.path)["ETag"]
        info = json.loads(path.fs.cat_file(path.path) or b"{}")
    except FileNotFoundError:
        return {}, None
    except ValueError:
        info = {}
    return (info if isinstance(info, dict) else {}), etag  # a body newer than the ETag only fails the If-Match


def describe(info: object) -> str:
    """Who holds a lock, from what its holder wrote (a lock file's or a lock object's JSON)."""
    if not isinstance(info, dict) or "pid" not in info:
        return "another writer"
    host = f" on {info['host']}" if "host" in info else ""
    return f"{info.get('what', 'another writer')} (pid {info['pid']}{host}, since {info.get('since', '?')})"


def _try_take(path: Any, body: bytes) -> str | None:
    """Create the lock object, or replace a stale one; the new version's ETag, or None if another holds it."""
    try:
        return path.fs.pipe_file(path.path, body, mode="create")["ETag"]
    except FileExistsError:
        pass
    info, etag = read_holder(path)
    if etag is None or float(info.get("expires", 0)) > time.time():
        return None
    try:  # the lease ran out: break it, if no other writer broke or renewed it first
        return path.fs.pipe_file(path.path, body, IfMatch=etag)["ETag"]
    except (OSError, FileNotFoundError):
        return None


@contextmanager
def object_lock(
    path: Any,
    what: str,
    timeout: float,
    on_wait: Callable[[str], None] | None,
    busy: Callable[[str, str], Exception],
    lease: float | None = None,
) -> Iterator[None]:
    """Hold the lock object at ``path`` for the block; ``busy(message, holder)`` is raised after ``timeout`` s.

    The lease is ``lease`` seconds, else ``$CRYPTO_ASSETS_LAKE_LOCK_LEASE_SECONDS``, else :data:`LEASE_SECONDS`."""
    lease = lease or float(os.environ.get(LEASE_VARIABLE) or LEASE_SECONDS)
    deadline = time.monotonic() + timeout
    told = False
    while (etag := _try_take(path, _body(what, lease))) is None:
        holder = describe(read_holder(path)[0])
        left = deadline - time.monotonic()
        if left <= 0:
            raise busy(f"being written by {holder}; gave up waiting after {timeout:g} s (lock {path})", holder)
        if on_wait is not None and not told:
            on_wait(f"being written by {holder}; waiting up to {timeout:g} s (lock {path})")
            told = True
        time.sleep(min(POLL_SECONDS, left))

    state = {"etag": etag, "lost": None}
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease / 4):
            try:
                state["etag"] = path.fs.pipe_file(path.path, _body(what, lease), IfMatch=state["etag"])["ETag"]
            except Exception as exc:  # noqa: BLE001 - any failure to renew means the lease may lapse
                state["lost"] = exc
                return

    renewer = threading.Thread(target=renew, name=f"lease {path}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        if state["lost"] is None:
            path.fs.rm_file(path.path)
    if state["lost"] is not None:
        raise LockLostError(f"lost the lock {path}: its lease could not be renewed ({state['lost']})")
