"""``crypto-assets storage``: bytes per dataset and partition and per folder of the speed layer's state, and what
can be reclaimed (micro-batches the batch view supersedes or compaction would fold, expirable log days, temp
files left by crashed writes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from crypto_assets.lake.location import scan_parquet
from crypto_assets.lake.microbatch_log import CANDLES_1M, DAILY, LOG_DIR, SPEED
from crypto_assets.serving.compaction import (
    compact_speed,
    compaction_bound,
    expirable_log_days,
    reclaimable_batches,
    size_of,
)
from crypto_assets.serving.pipeline import batch_seams
from crypto_assets.serving.speed_store import COMPACTED, PART
from crypto_assets.settings import Settings

TEMP_PREFIX = ".tmp-"
ORPHAN_AGE_SECONDS = 3600  # younger temp files may belong to a write in progress
SPEED_STATE = "speed-state"
USAGE_SCHEMA = {"dataset": pl.String, "partition": pl.String, "files": pl.Int64, "bytes": pl.Int64}


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else ([path] if path.is_file() else [])


def usage(lake: Path) -> pl.DataFrame:
    """Files and bytes per dataset and partition (``symbol=S``; for the speed layer: batches, compacted, log)."""
    rows = []
    datasets = sorted(p for p in lake.iterdir() if p.is_dir()) if lake.is_dir() else []
    for root in datasets:
        if root.name == SPEED:
            for dataset in (CANDLES_1M, DAILY):
                files = _files(root / dataset)
                rows.append((f"{SPEED}/{dataset}", "batch=*", len(files), sum(f.stat().st_size for f in files)))
                compacted = _files(root / COMPACTED / dataset)
                rows.append((f"{SPEED}/{dataset}", COMPACTED, len(compacted), sum(f.stat().st_size for f in compacted)))
            log = _files(root / LOG_DIR)
            rows.append((f"{SPEED}/{LOG_DIR}", "days", len(log), sum(f.stat().st_size for f in log)))
            continue
        for partition in sorted(p for p in root.iterdir()):
            files = _files(partition)
            rows.append((root.name, partition.name, len(files), sum(f.stat().st_size for f in files)))
    return pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row")


def state_usage(speed_dir: Path) -> pl.DataFrame:
    """Files and bytes per entry of the speed layer's state, ``<home>/speed`` (``speed-state``): the stream's
    checkpoints, the missed stretches and producer state, quarantined bad messages, the broker's rotation note."""
    entries = sorted(speed_dir.iterdir()) if speed_dir.is_dir() else []
    rows = []
    for entry in entries:
        files = _files(entry)
        rows.append((SPEED_STATE, entry.name, len(files), sum(f.stat().st_size for f in files)))
    return pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row")


def orphaned_temp_files(roots: list[Path], now: float | None = None) -> list[Path]:
    now = now or time.time()
    found = []
    for root in roots:
        for path in root.rglob(f"{TEMP_PREFIX}*") if root.is_dir() else []:
            if path.is_file() and now - path.stat().st_mtime > ORPHAN_AGE_SECONDS:
                found.append(path)
    return found


def _superseded_file(path: Path, seams: dict[str, date | None], day: pl.Expr) -> bool:
    newest = scan_parquet([path]).group_by("symbol").agg(day.max().alias("day")).collect()
    return all(seams.get(s) is not None and d is not None and d <= seams[s] for s, d in newest.iter_rows())


@dataclass
class Reclaimable:
    compactable_batches: dict[str, tuple[int, int]] = field(default_factory=dict)  # dataset -> (dirs, bytes)
    superseded_batches: dict[str, tuple[int, int]] = field(default_factory=dict)
    log_days: list[tuple[str, int]] = field(default_factory=list)
    temp_files: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return (
            sum(b for _, b in self.compactable_batches.values())
            + sum(b for _, b in self.log_days)
            + sum(b for _, b in self.temp_files)
        )


def reclaimable(settings: Settings) -> Reclaimable:
    lake = settings.lake_dir
    seams = batch_seams(lake, settings.symbol_names)
    bound = compaction_bound(lake)
    result = Reclaimable()
    days = {CANDLES_1M: pl.col("open_time").dt.date(), DAILY: pl.col("date")}
    for dataset, day in days.items():
        batches = reclaimable_batches(lake, dataset, bound)
        superseded = [p for _, p in batches if (p / PART).is_file() and _superseded_file(p / PART, seams, day)]
        result.compactable_batches[dataset] = (len(batches), sum(size_of(p) for _, p in batches))
        result.superseded_batches[dataset] = (len(superseded), sum(size_of(p) for p in superseded))
    result.log_days = [(p.stem, size_of(p)) for p in expirable_log_days(lake, seams, bound)]
    result.temp_files = [(p, size_of(p)) for p in orphaned_temp_files([lake, settings.landing_dir])]
    return result


def reclaim(settings: Settings) -> tuple[int, list[str]]:
    """Compact the speed layer and remove orphaned temp files; returns bytes freed and what was done."""
    lake = settings.lake_dir
    result = compact_speed(lake, batch_seams(lake, settings.symbol_names))
    temp = orphaned_temp_files([lake, settings.landing_dir])
    freed = result.bytes_reclaimed
    for path in temp:
        freed += size_of(path)
        path.unlink(missing_ok=True)
    done = [
        f"compacted {result.batches_compacted} micro-batch(es) through batch {result.through_batch_id}",
        f"expired {sum(result.rows_expired.values()):,} superseded speed row(s)",
        f"removed {len(result.log_days_removed)} log day(s){': ' + ', '.join(result.log_days_removed) if result.log_days_removed else ''}",
        f"removed {len(temp)} orphaned temp file(s)",
    ]
    return freed, done


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def render_storage(table: pl.DataFrame, spare: Reclaimable) -> str:
    lines = ["dataset                partition             files        size"]
    for dataset in table["dataset"].unique(maintain_order=True).to_list():
        part = table.filter(pl.col("dataset") == dataset)
        for _, partition, files, size in part.iter_rows():
            lines.append(f"{dataset:<22} {partition:<20} {files:>6} {human_bytes(size):>11}")
        if part.height > 1:
            lines.append(
                f"{'':<22} {'(total)':<20} {int(part['files'].sum()):>6} {human_bytes(int(part['bytes'].sum())):>11}"
            )
    lines.append(
        f"{'all':<22} {'':<20} {int(table['files'].sum() or 0):>6} {human_bytes(int(table['bytes'].sum() or 0)):>11}"
    )
    lines += ["", "reclaimable (crypto-assets storage --reclaim; unified_view runs also compact)"]
    for dataset, (count, size) in spare.compactable_batches.items():
        superseded, superseded_size = spare.superseded_batches[dataset]
        lines.append(
            f"  speed/{dataset}: {count} committed micro-batch dir(s), {human_bytes(size)}, fold into the compacted file; "
            f"{superseded} ({human_bytes(superseded_size)}) hold only days the batch view has closed"
        )
    lines.append(
        f"  speed/_log: {len(spare.log_days)} day(s) whose data the batch view has closed, {human_bytes(sum(b for _, b in spare.log_days))}"
        + (f" ({', '.join(d for d, _ in spare.log_days)})" if spare.log_days else "")
    )
    lines.append(
        f"  orphaned temp files (older than 1 h): {len(spare.temp_files)}, {human_bytes(sum(b for _, b in spare.temp_files))}"
    )
    lines.append(f"  at most {human_bytes(spare.total_bytes)} in all (compacted rows that are still needed are kept)")
    return "\n".join(lines) + "\n"
