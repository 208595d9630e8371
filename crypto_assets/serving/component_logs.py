"""The logs of the components ``crypto-assets up`` runs: ``<home>/logs/<name>.log``, bounded by size.

Each child writes into a pipe; a pump thread copies its output line by line into a :class:`RotatingLog`,
without colour codes and progress bars, so weeks of running keep at most ``max_bytes × (backups + 1)`` per
component and the logs read as text. The pump notices the child's ready text as it passes, so readiness never
depends on offsets into a file that may have rotated since.
"""

from __future__ import annotations

import os
import re
import threading
from functools import partial
from pathlib import Path
from typing import BinaryIO

# CSI sequences (colours, cursor moves), OSC sequences (titles, links) and the two-byte escapes.
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# Spark's console progress bar, one or more stages side by side: "[Stage 3:====>   (1 + 1) / 2]". The last
# stage may be cut short when a line was split at LINE_LIMIT.
PROGRESS_BAR = re.compile(r"\s*(?:\[Stage \d[^\]]*\]?)+\s*")
LINE_LIMIT = 64 * 1024  # longer lines are split, so a child that never ends a line cannot fill the memory
TAIL_BYTES = 64 * 1024


def clean_line(line: str) -> str | None:
    """A line of a child's output (without its newline) as it belongs in the log: no colour codes and, where
    the child redrew it with carriage returns, only its final text. None for a line that is only a progress
    bar, or only redraws that were wiped."""
    text = ANSI_ESCAPE.sub("", line)
    if "\r" in text:
        shown = [part for part in text.split("\r") if part.strip()]
        if not shown:
            return None
        text = shown[-1]
    return None if PROGRESS_BAR.fullmatch(text) else text


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


class RotatingLog:
    """``<name>.log`` and at most ``backups`` older files, ``<name>.log.1`` the newest: a write that would take
    the current file past ``max_bytes`` first shifts them along by renaming (RotatingFileHandler's scheme).
    Each write opens the file, so a log deleted or moved from outside is simply started again. One instance
    serves every run of a child: the lock keeps lines whole while a finished run's pump still drains."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        data = text.encode(errors="replace")
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as out:
                out.write(data)

    def _rotate(self) -> None:
        for index in range(self.backups - 1, 0, -1):
            if rotated(self.path, index).exists():
                os.replace(rotated(self.path, index), rotated(self.path, index + 1))
        os.replace(self.path, rotated(self.path, 1))


class LogPump:
    """Copies one run of a child from its pipe into its log until the pipe closes (the child and everything
    that inherited its output have exited). It only ever waits on the pipe, so the child never blocks on a
    slow log; should the supervisor die, the child's next write fails (EPIPE) instead of hanging."""

    def __init__(self, name: str, stream: BinaryIO, log: RotatingLog, ready_text: str | None = None):
        self.log = log
        self.ready_text = ready_text
        self.said_ready = threading.Event()
        self._thread = threading.Thread(target=self._copy, args=(stream,), name=f"log pump {name}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _copy(self, stream: BinaryIO) -> None:
        with stream:
            for raw in iter(partial(stream.readline, LINE_LIMIT), b""):
                line = clean_line(raw.decode(errors="replace").removesuffix("\n"))
                if line is None:
                    continue
                if self.ready_text and self.ready_text in line:
                    self.said_ready.set()
                try:
                    self.log.write(line + "\n")
                except OSError:
                    pass  # e.g. a full disk: the line is lost, but the pump keeps reading so the child goes on


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, reaching into ``<name>.log.1`` when the current file was just rotated."""
    collected: list[str] = []
    for candidate in (path, rotated(path, 1)):
        try:
            with candidate.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - TAIL_BYTES))
                text = log.read().decode(errors="replace")
        except OSError:
            continue
        collected = text.splitlines()[-(lines - len(collected)) :] + collected
        if len(collected) >= lines:
            break
    return "\n".join(collected)
