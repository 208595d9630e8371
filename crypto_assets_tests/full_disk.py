"""A disk that fills up mid-work, for the "a full disk loses nothing" tests.

Where the machine allows it (root with mount rights, as on the developers' machines and CI) the disk is real: a
small tmpfs mounted for the test, filled with a ballast file until only the bytes the test asks for are free.
Elsewhere a write hook stands in: the lake's writers (:func:`crypto_assets.lake.atomic.write_parquet` and
:func:`crypto_assets.lake.atomic.write_all`) run out of space once a byte budget is spent, writing what fits
first as a full disk does. The hook works in this process only, so work that a test would run in a child
process (the CLI) runs in-process under it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.lake import atomic

BALLAST = "ballast"


class SmallDisk:
    """A folder on a disk whose free space a test sets (:meth:`leave_free`) and gives back (:meth:`free_space`)."""

    in_process = False  # True when only this process sees the disk fill up
    page = 1  # the unit space is handed out in

    def __init__(self, root: Path):
        self.root = root

    def leave_free(self, free_bytes: int) -> None:
        raise NotImplementedError

    def free_space(self) -> None:
        raise NotImplementedError

    def used(self) -> int:
        """Bytes the work has taken so far (on a tmpfs: whole pages, as the kernel counts them)."""
        raise NotImplementedError

    def space(self, size: int) -> int:
        """The space a file of ``size`` bytes takes."""
        return -(-size // self.page) * self.page

    def measure(self, work: Callable[[], object]) -> int:
        """Run ``work`` with room to spare and return the space it took."""
        self.free_space()
        before = self.used()
        work()
        return self.used() - before


class Tmpfs(SmallDisk):
    """A real tmpfs: the kernel says ENOSPC, and a write that does not fit writes what fits."""

    page = 4096

    def leave_free(self, free_bytes: int) -> None:
        self.free_space()
        stats = os.statvfs(self.root)
        ballast = stats.f_bavail * stats.f_frsize - free_bytes
        assert ballast >= 0, f"the tmpfs at {self.root} has less than {free_bytes:,} bytes free"
        with (self.root / BALLAST).open("wb") as handle:
            handle.write(b"\0" * ballast)  # written, not sparse: tmpfs counts the pages

    def free_space(self) -> None:
        (self.root / BALLAST).unlink(missing_ok=True)

    def used(self) -> int:
        stats = os.statvfs(self.root)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


class WriteBudget(SmallDisk):
    """The lake's writers fail with ENOSPC once ``free_bytes`` more bytes are written (deletes free nothing)."""

    in_process = True

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        super().__init__(root)
        self.left: int | None = None  # None: room for everything
        self.written = 0
        self._lock = threading.Lock()  # the lake writes partitions from several threads
        write_parquet, write_all = atomic.write_parquet, atomic.write_all

        def short_write_all(fd: int, data: bytes) -> None:
            fits = self._take(len(data))
            write_all(fd, data[:fits])
            if fits < len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def short_write_parquet(frame: pl.DataFrame, path) -> None:  # noqa: ANN001 - a path or a buffer
            write_parquet(frame, path)
            if not isinstance(path, Path):
                return
            size = path.stat().st_size
            fits = self._take(size)
            if fits < size:
                os.truncate(path, fits)  # the half-written file a full disk leaves, worded as Polars words it
                raise pl.exceptions.ComputeError(
                    "parquet: File out of specification: underlying IO error: No space left on device (os error 28)"
                )

        # Every module of ours that imported the writers by name writes through the hook.
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] not in ("crypto_assets", "streaming_sensor"):
                continue
            for attribute, original, hooked in (
                ("write_parquet", write_parquet, short_write_parquet),
                ("write_all", write_all, short_write_all),
            ):
                if getattr(module, attribute, None) is original:
                    monkeypatch.setattr(module, attribute, hooked)

    def _take(self, wanted: int) -> int:
        """Spend up to ``wanted`` bytes of the budget; returns how many fit."""
        with self._lock:
            fits = wanted if self.left is None else min(self.left, wanted)
            self.written += fits
            if self.left is not None:
                self.left -= fits
            return fits

    def leave_free(self, free_bytes: int) -> None:
        self.left = free_bytes

    def free_space(self) -> None:
        self.left = None

    def used(self) -> int:
        return self.written


def mount_tmpfs(root: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``root``; None, or why it could not be mounted."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True)
    return None if done.returncode == 0 else f"mount -t tmpfs not permitted: {done.stderr.decode().strip()}"


@contextlib.contextmanager
def small_disk(kind: str, base: Path, monkeypatch: pytest.MonkeyPatch, size: str = "64m") -> Iterator[SmallDisk]:
    """A :class:`Tmpfs` (``kind`` "tmpfs"; the test is skipped, with the reason, where mounting is not
    permitted) or a :class:`WriteBudget` ("write_hook") at a new folder under ``base``."""
    root = base / f"disk-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    if kind == "write_hook":
        yield WriteBudget(root, monkeypatch)
        return
    refused = mount_tmpfs(root, size)
    if refused:
        pytest.skip(f"{refused}; the write_hook variant of this test runs the same case")
    try:
        yield Tmpfs(root)
    finally:
        subprocess.run(["umount", str(root)], check=False)


# A tmpfs is mounted and the CLI runs as a child process on it; the write hook runs all in this process.
DISKS = [pytest.param("tmpfs", marks=pytest.mark.integration), "write_hook"]


def run_cli(disk: SmallDisk, args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``crypto-assets ARGS`` as a user runs it (a child process), or in this process under a write hook;
    returns (exit code, stdout, stderr)."""
    if disk.in_process:
        from crypto_assets.cli import main

        out, err = io.StringIO(), io.StringIO()
        environment = dict(os.environ)  # the CLI exports its home and DAGSTER_HOME for the processes it starts
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd):
                code = main(args)
        finally:
            os.environ.clear()
            os.environ.update(environment)
        return code, out.getvalue(), err.getvalue()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTO_ASSETS_")}
    done = subprocess.run(
        [sys.executable, "-m", "crypto_assets.cli", *args], cwd=cwd, env=env, capture_output=True, timeout=300
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def lake_problems(root: Path) -> list[str]:
    """What a full disk must never leave under ``root``: temporary files, unreadable Parquet files, log
    lines that do not parse."""
    problems = [f"temporary file left: {p}" for p in root.rglob(f"{atomic.TEMP_PREFIX}*")]
    for path in root.rglob("*.parquet"):
        try:
            pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"unreadable: {path}: {exc}")
    for path in root.rglob("*.jsonl"):
        for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{path}:{number}: not a JSON line: {line[:80]!r}")
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            problems.append(f"{path}: ends in a torn line")
    return problems
