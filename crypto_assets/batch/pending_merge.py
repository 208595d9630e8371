"""Ingests whose merge into ``minute_raw`` has not finished, so ``sql`` and ``status`` can say so.

An ingest lands each file and records it in the landing manifest as not merged, merges it, then marks it merged
(:mod:`crypto_assets.batch.minute_ingest`). An entry still not merged means that ingest is running or was
killed mid-merge: ``minute_raw`` may hold part of its rows. The next ingest, of any file, completes it first.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from crypto_assets.batch.landing import MANIFEST, LandingEntry, Manifest
from crypto_assets.batch.sources.discovery import infer_symbol


@dataclass(frozen=True)
class PendingMerge:
    ingests: list[LandingEntry]
    command: str  # the command line that completes the merge

    def message(self) -> str:
        which = ", ".join(f"#{e.order} ({e.symbol}, {e.original})" for e in self.ingests)
        return (
            f"minute_raw has a pending merge: ingest {which} did not finish (interrupted, or still running), so "
            f"minute_raw may hold only part of its rows; `{self.command}` completes it"
        )

    def as_json(self) -> dict:
        return {
            "ingests": [{"order": e.order, "symbol": e.symbol, "original": e.original} for e in self.ingests],
            "command": self.command,
        }


def pending_merge(landing: Path, home_option: str = "") -> PendingMerge | None:
    """The landing folder's unfinished merge, or None. ``home_option``: e.g. ``--home H`` for the command."""
    if not (landing / MANIFEST).is_file():
        return None
    manifest = Manifest.load(landing)
    pending = sorted(manifest.pending, key=lambda e: e.order)
    if not pending:
        return None
    # Ingesting the same file again completes every pending merge; the landing copy stands in for a gone original.
    entry = pending[0]
    path = Path(entry.original) if Path(entry.original).is_file() else manifest.path_of(entry)
    words = ["crypto-assets", *shlex.split(home_option), "ingest", str(path)]
    if infer_symbol(path, [entry.symbol]) is None:
        words += ["--symbol", entry.symbol]
    return PendingMerge(pending, shlex.join(words))
