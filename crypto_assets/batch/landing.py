"""The landing area: an independent, checksummed copy of every file ingested, and the manifest of ingests.

``<home>/landing/`` holds a byte copy of each ingested file (never a link to the user's file, so editing or
deleting the original later changes nothing here) named ``<SYMBOL>__<stem>-<sha256[:12]><suffix>``, and
``manifest.json``, which records for every ingest its order, the original path, the copy's sha256, size, row
count and time span. The manifest's order is the precedence of files: where two files disagree on a minute,
the one ingested later wins. ``minute_raw`` can always be rebuilt from this folder and ``exchange_minutes``.

Everything here is read and written under the lake's ``minute_raw`` lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crypto_assets.batch.sources.discovery import SUPPORTED_SUFFIXES, SourceFile
from crypto_assets.lake.atomic import TEMP_PREFIX, fsync_path, naming_a_full_disk, write_all, write_text_atomic

MANIFEST = "manifest.json"
BLOCK = 1 << 20
COPY_ATTEMPTS = 3
# A file modified this recently may still be being written: the copy waits until it has been quiet this long.
QUIET_SECONDS = 1.0


@dataclass
class LandingEntry:
    order: int  # 1 for the first file ever ingested; a later ingest wins a conflicting minute
    file: str  # the copy's name in the landing folder
    symbol: str
    original: str  # the path the user ingested
    sha256: str
    size: int
    ingested_at: str
    rows: int | None = None  # rows read (valid and quarantined), once merged
    first: str | None = None  # first and last valid minute (ISO, UTC), once merged
    last: str | None = None
    merged: bool = False  # False between landing and the end of its merge into minute_raw
    warning: str | None = None

    def label(self) -> str:
        """How conflicts and reports name this file: its ingest and where it came from."""
        return f"ingest #{self.order}: {self.original}"

    def span(self) -> tuple[datetime, datetime] | None:
        if self.first is None or self.last is None:
            return None
        return datetime.fromisoformat(self.first), datetime.fromisoformat(self.last)


@dataclass
class Manifest:
    landing: Path
    entries: list[LandingEntry] = field(default_factory=list)

    @classmethod
    def load(cls, landing: Path, tidy: bool = False) -> Manifest:
        """The manifest; with ``tidy`` (only under the lake's lock) copies it does not list are removed, and a
        manifest not saved yet is saved."""
        path = landing / MANIFEST
        manifest = cls(landing)
        if path.is_file():
            data = json.loads(path.read_text())
            manifest.entries = [LandingEntry(**e) for e in data.get("entries", [])]
            if tidy:
                manifest._remove_unlisted()
        else:
            manifest._adopt_unlisted()
            if tidy:
                # Saved before anything lands: from now on a copy the manifest does not list is a landing cut
                # short (a crash, a full disk), to land again, never a file to adopt as already merged.
                manifest.save()
        return manifest

    def save(self) -> None:
        data = {"version": 1, "entries": [asdict(e) for e in self.entries]}
        write_text_atomic(json.dumps(data, indent=1) + "\n", self.landing / MANIFEST)

    def path_of(self, entry: LandingEntry) -> Path:
        return self.landing / entry.file

    def find(self, symbol: str, sha256: str) -> LandingEntry | None:
        return next((e for e in self.entries if e.symbol == symbol and e.sha256 == sha256), None)

    @property
    def pending(self) -> list[LandingEntry]:
        return [e for e in self.entries if not e.merged]

    def latest_first(self) -> list[LandingEntry]:
        return sorted(self.entries, key=lambda e: e.order, reverse=True)

    def sources(self) -> list[SourceFile]:
        """The landed files as sources ranked by precedence: the latest ingest first (rank 0)."""
        return [SourceFile(self.path_of(e), e.symbol, rank) for rank, e in enumerate(self.latest_first())]

    def _unlisted(self) -> list[Path]:
        known = {e.file for e in self.entries}
        return [
            p
            for p in self.landing.iterdir()
            if p.is_file()
            and p.name not in known
            and "__" in p.name
            and p.suffix.lower() in SUPPORTED_SUFFIXES
            and not p.name.startswith(TEMP_PREFIX)
        ]

    def _remove_unlisted(self) -> None:
        """A copy the manifest does not list was left by an ingest killed before it recorded the copy: that
        ingest never happened, and its rerun lands the file again."""
        for path in self._unlisted():
            path.unlink(missing_ok=True)

    def _adopt_unlisted(self) -> None:
        """Files landed before the manifest existed join it, oldest first, as already merged."""
        if not self.landing.is_dir():
            return
        unlisted = sorted(self._unlisted(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for path in unlisted:
            digest, size = _hash_file(path)
            self.entries.append(
                LandingEntry(
                    self._next_order(),
                    path.name,
                    path.name.split("__", 1)[0],
                    str(path),
                    digest,
                    size,
                    _now(),
                    merged=True,
                )
            )

    def _next_order(self) -> int:
        return max((e.order for e in self.entries), default=0) + 1


@dataclass
class Landed:
    entry: LandingEntry
    already: bool  # the same bytes were ingested before for this symbol: nothing new to do
    warning: str | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as src, target.open("wb", buffering=0) as dst:
        for block in iter(lambda: src.read(BLOCK), b""):
            digest.update(block)
            write_all(dst.fileno(), block)
            size += len(block)
    return digest.hexdigest(), size


def _signature(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def snapshot_copy(source: Path, target: Path) -> tuple[str, int, str | None]:
    """Copy ``source`` to ``target``; returns the copy's sha256 and size, and a warning if the source changed.

    The source's size, mtime and inode are compared before and after the copy, and the copy's size with the
    source's: a file still being written is copied again (up to :data:`COPY_ATTEMPTS` times). If it never
    holds still, the last copy is kept (a consistent snapshot: its checksum is of exactly the bytes ingested)
    and the warning says so.
    """
    changed = ""
    for _ in range(COPY_ATTEMPTS):
        before = _signature(source)
        digest, size = _copy_hashing(source, target)
        after = _signature(source)
        if before == after and size == after[0]:
            # A writer may pause between writes: a file modified moments ago must stay still a little longer.
            quiet_for = time.time() - after[1] / 1e9
            if quiet_for >= QUIET_SECONDS:
                return digest, size, None
            time.sleep(QUIET_SECONDS - quiet_for)
            settled = _signature(source)
            if settled == after:
                return digest, size, None
            after = settled
        changed = f"{before[0]:,} -> {after[0]:,} bytes"
    warning = (
        f"{source} changed while it was read ({changed}; {COPY_ATTEMPTS} tries); ingested a snapshot of "
        f"{size:,} bytes (sha256 {digest[:12]}). Ingest it again once it is complete: rows already in stay."
    )
    return digest, size, warning


def land(source: SourceFile, manifest: Manifest) -> Landed:
    """Copy one file into the landing folder and record it in the manifest (saved by the caller).

    Re-ingesting bytes already landed for the symbol adds nothing and says so (``already``).
    """
    landing = manifest.landing
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f"{TEMP_PREFIX}{source.symbol}.{os.getpid()}.{uuid.uuid4().hex}"
    try:
        with naming_a_full_disk(landing):
            digest, size, warning = snapshot_copy(source.path, tmp)
            known = manifest.find(source.symbol, digest)
            if known is not None:
                return Landed(known, already=True, warning=warning)
            name = f"{source.symbol}__{source.path.stem}-{digest[:12]}{source.path.suffix.lower()}"
            fsync_path(tmp)
            os.replace(tmp, landing / name)
            fsync_path(landing)
    finally:
        tmp.unlink(missing_ok=True)
    entry = LandingEntry(
        manifest._next_order(), name, source.symbol, str(source.path), digest, size, _now(), warning=warning
    )
    manifest.entries.append(entry)
    return Landed(entry, already=False, warning=warning)
