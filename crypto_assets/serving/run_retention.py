"""Bounded run history: a scheduled job deletes the routine runs that refresh ``unified_view`` once they are
older than ``[dagster] run_retention``, and its own old runs, through Dagster's public instance API.

The refresh sensors start a run every few seconds to minutes (about 2,600 a day with the stream up), each
keeping its event log; without this the history grows for as long as the system runs. Kept whatever their
age: every failed or unfinished run, every batch, backfill and forecast run, and the run holding each
symbol's latest ``unified_view`` materialization, so the UI, the automation condition and the freshness
check still see when each view was last built.
"""

# No `from __future__ import annotations`: Dagster reads the op context annotation at definition time.
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Self

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    JobDefinition,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RunRecord,
    RunsFilter,
    ScheduleDefinition,
    job,
    op,
)

from crypto_assets.asset_names import UNIFIED_VIEW
from crypto_assets.serving.refresh_runs import REFRESH_SENSORS, SENSOR_NAME_TAG
from crypto_assets.settings import Settings

RUN_RETENTION_JOB = "run_retention_job"
RUN_RETENTION_SCHEDULE = "run_retention_schedule"
# Finished without failing: a failure is kept for as long as someone may want to read it.
DONE = (DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED)
PAGE = 500  # run records read at a time
MAX_DELETED_PER_RUN = 10_000  # a first run over months of history spreads its work over a few runs


@dataclass(frozen=True)
class FinishedRun:
    """What the retention rule looks at in a run record."""

    run_id: str
    job_name: str
    status: DagsterRunStatus
    sensor_name: str | None
    finished_at: datetime

    @classmethod
    def of(cls, record: RunRecord) -> Self:
        run = record.dagster_run
        finished = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else record.update_timestamp
        return cls(run.run_id, run.job_name, run.status, run.tags.get(SENSOR_NAME_TAG), finished)


def deletable_runs(
    runs: Iterable[FinishedRun], now: datetime, window: timedelta, keep: Collection[str] = ()
) -> list[str]:
    """Ids of the routine runs (a refresh sensor's, or this job's own) that finished without failing more
    than ``window`` before ``now``, except those in ``keep``."""
    cutoff = now - window
    return [
        run.run_id
        for run in runs
        if run.status in DONE
        and (run.sensor_name in REFRESH_SENSORS or run.job_name == RUN_RETENTION_JOB)
        and run.finished_at < cutoff
        and run.run_id not in keep
    ]


def latest_view_runs(instance: DagsterInstance, symbols: Iterable[str]) -> set[str]:
    """The runs holding each symbol's latest unified_view materialization."""
    kept = set()
    for symbol in symbols:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(UNIFIED_VIEW), asset_partitions=[symbol]), limit=1
        ).records
        kept.update(record.run_id for record in records)
    return kept


def _candidates(instance: DagsterInstance, cutoff: datetime) -> Iterator[FinishedRun]:
    """Finished routine runs last updated before ``cutoff`` (the storage's index does the coarse filtering),
    read page by page before anything is deleted, so the paging cursor always names a stored run."""
    for filters in (
        RunsFilter(statuses=list(DONE), tags={SENSOR_NAME_TAG: list(REFRESH_SENSORS)}, updated_before=cutoff),
        RunsFilter(statuses=list(DONE), job_name=RUN_RETENTION_JOB, updated_before=cutoff),
    ):
        cursor = None
        while records := instance.get_run_records(filters, limit=PAGE, cursor=cursor):
            yield from (FinishedRun.of(record) for record in records)
            cursor = records[-1].dagster_run.run_id


def remove_leftover_files(instance: DagsterInstance, run_id: str) -> int:
    """Dagster's SQLite storage empties a deleted run's own event-log database but leaves the file, and its
    compute logs stay too: remove both from Dagster's documented layout under DAGSTER_HOME
    (``history/runs/<run_id>.db``, ``storage/<run_id>/``). Returns the bytes freed; on other storages there is
    nothing there."""
    root = Path(instance.root_directory)
    freed = 0
    for path in [root / "history" / "runs" / f"{run_id}.db{suffix}" for suffix in ("", "-wal", "-shm")]:
        if path.is_file():
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
    logs = root / "storage" / run_id
    if logs.is_dir():
        freed += sum(p.stat().st_size for p in logs.rglob("*") if p.is_file())
        shutil.rmtree(logs, ignore_errors=True)
    return freed


@dataclass(frozen=True)
class Pruned:
    refresh_runs: int
    retention_runs: int
    bytes_freed: int


def prune_run_history(instance: DagsterInstance, window: timedelta, symbols: Iterable[str], now: datetime) -> Pruned:
    keep = latest_view_runs(instance, symbols)
    runs = list(islice(_candidates(instance, now - window), MAX_DELETED_PER_RUN))
    own = {run.run_id for run in runs if run.job_name == RUN_RETENTION_JOB}
    doomed = deletable_runs(runs, now, window, keep)
    freed = 0
    for run_id in doomed:
        instance.delete_run(run_id)
        freed += remove_leftover_files(instance, run_id)
    retention_runs = len(own.intersection(doomed))
    return Pruned(len(doomed) - retention_runs, retention_runs, freed)


def utc_now() -> datetime:
    return datetime.now(UTC)


def retention_cron(window: timedelta) -> str:
    """Hourly; every 10 minutes for a window under a day and every 5 under an hour, so the history kept
    stays near the window (it holds up to the window plus one interval of runs)."""
    if window < timedelta(hours=1):
        return "*/5 * * * *"
    return "*/10 * * * *" if window < timedelta(days=1) else "25 * * * *"


def build_run_retention(
    settings: Settings, now: Callable[[], datetime] = utc_now
) -> tuple[JobDefinition, ScheduleDefinition]:
    window, symbols = settings.dagster.run_retention, settings.symbol_names

    @op(out=Out(Nothing), description=f"Deletes finished routine unified_view refreshes older than {window}.")
    def delete_old_routine_runs(context: OpExecutionContext):
        at = now()
        pruned = prune_run_history(context.instance, window, symbols, at)
        context.log.info(
            f"deleted {pruned.refresh_runs} unified_view refresh run(s) and {pruned.retention_runs} run(s) of "
            f"{RUN_RETENTION_JOB} that finished before {at - window:%Y-%m-%d %H:%M:%S} UTC "
            f"({pruned.bytes_freed / 1e6:.1f} MB of files)"
        )
        return Output(
            None,
            metadata={
                "deleted_refresh_runs": pruned.refresh_runs,
                "deleted_retention_runs": pruned.retention_runs,
                "bytes_freed": pruned.bytes_freed,
                "window_seconds": int(window.total_seconds()),
            },
        )

    @job(
        name=RUN_RETENTION_JOB,
        description="Keeps the run history bounded: deletes the unified_view refresh runs of the sensors "
        f"{', '.join(REFRESH_SENSORS)} and this job's own runs once they finished without failing more than "
        f"[dagster] run_retention ({window}) ago. Failed runs, batch and forecast runs, and the latest refresh "
        "of each symbol are kept.",
    )
    def run_retention_job():
        delete_old_routine_runs()

    schedule = ScheduleDefinition(
        name=RUN_RETENTION_SCHEDULE,
        job=run_retention_job,
        cron_schedule=retention_cron(window),
        default_status=DefaultScheduleStatus.RUNNING,
        description="Runs run_retention_job, so `crypto-assets up` keeps the run history bounded unattended.",
    )
    return run_retention_job, schedule
