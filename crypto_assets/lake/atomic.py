"""Atomic, durable file writes: a temporary file in the target directory, fsync'ed, then a rename.

A reader sees either the old file or the new one, never a half-written one. The file is fsync'ed before the
rename and its directory after it, so a commit survives a power cut as well as a crash. A process killed
midway leaves only a stray ``.tmp-*`` file, which the next writer holding the lake's lock removes
(:func:`remove_stray_temps`).

A full disk (or quota) is a :class:`DiskFullError` naming the file: the temporary file is removed and the
target left as it was, so once space is freed the same work runs again and completes.

On object storage there are no renames: each file is encoded in memory (or in a local temporary file) and
stored with a single PUT, which S3 makes visible whole or not at all (:func:`crypto_assets.lake.location.put_object`).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from crypto_assets.lake.location import is_remote, put_object

TEMP_PREFIX = ".tmp-"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Polars (Rust) words an OS error: no errno, no path


class DiskFullError(OSError):
    """Writing ``filename`` ran out of space or quota; the file was left as it was (no temporary file stays)."""

    def __str__(self) -> str:
        return (
            f"{self.strerror.lower()} ({errno.errorcode.get(self.errno, self.errno)}) writing {self.filename}, "
            "which is left as it was; free some space and run again"
        )


def disk_full_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT if ``exc`` (an OSError, or a Polars error wrapping one) says the disk is full."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:  # Polars raises an OSError without errno, or its own error, with the code in the text
        found = _RUST_OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else None
    return code if code in DISK_FULL_ERRNOS else None


@contextmanager
def naming_a_full_disk(path: Path) -> Iterator[None]:
    """Raise running out of space while writing ``path`` as a :class:`DiskFullError` that names ``path``: the
    errors Python and Polars raise name neither the file nor, for Polars, the error number."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        code = disk_full_errno(exc)
        if code is None:
            raise
        raise DiskFullError(code, os.strerror(code), str(path)) from exc


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's) data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A unique temporary name next to ``path`` (in its directory, so the rename never crosses a file system)."""
    if not is_remote(path):  # object storage has no folders to make
        path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name created by the writer itself, so the usual umask applies (mkstemp would give 0600).
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex}")


def commit(tmp: Path, path: Path) -> None:
    """Replace ``path`` with the written ``tmp`` in one durable rename (on object storage: one server-side
    copy, which S3 makes visible whole, then the staged object is deleted)."""
    if is_remote(path):
        path.fs.copy(tmp.path, path.path)
        tmp.fs.rm_file(tmp.path)
        return
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one durable rename.

    For a ``path`` on object storage the temporary file is local, and its bytes are stored with one PUT."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="crypto-assets-") as folder:
            tmp = Path(folder) / path.name
            yield tmp
            put_object(path, tmp.read_bytes())
        return
    with naming_a_full_disk(path):
        tmp = temp_path(path)
        try:
            yield tmp
            commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    # Fixed settings keep files byte-identical when the same rows are written twice. On real 1-minute
    # candles LZ4 writes ~1.5x and reads ~1.5x faster than zstd level 1 for ~20% more bytes
    # (bench/compression_bench.py): writing dominated ingest time, reading dominates daily aggregation.
    # One chunk: the encoding then depends on the rows alone, not on how the frame was assembled.
    frame = frame.rechunk() if frame.n_chunks("all") != [1] * frame.width else frame
    frame.write_parquet(path, compression="lz4", statistics=True)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> int:
    """Write ``frame`` to ``path`` atomically and return the bytes written."""
    if is_remote(path):
        buffer = io.BytesIO()
        write_parquet(frame, buffer)
        put_object(path, buffer.getvalue())
        return buffer.tell()
    with atomic_target(path) as tmp:
        write_parquet(frame, tmp)
    return path.stat().st_size


def stage_parquet(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` beside ``path`` under a temporary name, for a later :func:`commit` (by any process that
    sees the same folder); a staged file never committed is a stray temporary file like any other."""
    tmp = temp_path(path)
    if is_remote(path):
        write_parquet_atomic(frame, tmp)
        return tmp
    try:
        with naming_a_full_disk(path):
            write_parquet(frame, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_text_atomic(text: str, path: Path) -> int:
    if is_remote(path):
        data = text.encode()
        put_object(path, data)
        return len(data)
    with atomic_target(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            write_all(fd, text.encode())
        finally:
            os.close(fd)
    return path.stat().st_size


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync it: the line is there whole once this returns.

    Appends hold the file's lock, as several processes append to one file. A write that fails midway (a full
    disk writes what fits) is cut off again, and a line a crash left without its newline (readers skip it) is
    removed before the next one is appended: a line is never glued onto the torn end of another.
    """
    data = (line + "\n").encode()
    with naming_a_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            end = _whole_lines_end(fd)
            try:
                if end < os.fstat(fd).st_size:
                    os.ftruncate(fd, end)
                write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, end)  # shrinking needs no space
                raise
        finally:
            os.close(fd)  # also releases the lock


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may write only part (a full disk writes what fits, then fails)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _whole_lines_end(fd: int, block: int = 1 << 16) -> int:
    """The size of the file up to and with its last newline (the whole file when it ends with one)."""
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def remove_stray_temps(roots: Iterable[Path]) -> list[Path]:
    """Delete the temporary files a killed writer left under ``roots``; returns them.

    Call it only while holding the lock of every writer of those folders: a live writer's temporary file
    would otherwise be taken from under it.
    """
    removed = []
    for root in roots:
        if is_remote(root):
            removed += _remove_remote_temps(root)
            continue
        if not root.is_dir():
            continue
        for path in root.rglob(f"{TEMP_PREFIX}*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _remove_remote_temps(root) -> list:  # noqa: ANN001
    stray = [p for p in root.fs.find(root.path) if p.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
    for key in stray:
        root.fs.rm_file(key)
    return [root.joinpath(key[len(root.path) :].lstrip("/")) for key in stray]
