"""Bounded run history: which runs the retention rule deletes (by hand-made cases and against a plain reference
predicate), and the retention job on real Dagster instances (stock SQLite and PostgreSQL) with really executed
runs tagged as the sensors, schedules and jobs tag them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    StaticPartitionsDefinition,
    asset,
    job,
    materialize,
    op,
)
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from crypto_assets.asset_names import FORECASTS, UNIFIED_VIEW
from crypto_assets.batch.backfill.missed_sensor import SENSOR_NAME as MISSED_STRETCHES_SENSOR
from crypto_assets.dagster_home import write_dagster_yaml
from crypto_assets.definitions import build_definitions
from crypto_assets.serving.refresh_runs import (
    AUTOMATION_SENSOR,
    REFRESH_TAG,
    SENSOR_NAME_TAG,
    SPEED_REFRESH_SENSOR,
)
from crypto_assets.serving.run_retention import (
    RUN_RETENTION_JOB,
    RUN_RETENTION_SCHEDULE,
    FinishedRun,
    build_run_retention,
    deletable_runs,
    retention_cron,
)
from crypto_assets.settings import load_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def finished(run_id, *, ago, status=DagsterRunStatus.SUCCESS, sensor=None, job_name="__ASSET_JOB"):
    return FinishedRun(run_id, job_name, status, sensor, NOW - ago)


def test_only_old_routine_runs_that_did_not_fail_are_deletable():
    runs = [
        finished("speed-old", ago=timedelta(days=8), sensor=SPEED_REFRESH_SENSOR),
        finished("automation-old", ago=timedelta(days=8), sensor=AUTOMATION_SENSOR),
        finished("canceled-old", ago=timedelta(days=8), sensor=SPEED_REFRESH_SENSOR, status=DagsterRunStatus.CANCELED),
        finished("retention-old", ago=timedelta(days=8), job_name=RUN_RETENTION_JOB),
        finished("speed-new", ago=timedelta(days=6), sensor=SPEED_REFRESH_SENSOR),
        finished("failed-old", ago=timedelta(days=30), sensor=SPEED_REFRESH_SENSOR, status=DagsterRunStatus.FAILURE),
        finished("started-old", ago=timedelta(days=8), sensor=SPEED_REFRESH_SENSOR, status=DagsterRunStatus.STARTED),
        finished("batch-old", ago=timedelta(days=30), job_name="batch_daily_refresh"),
        finished("gap-backfill-old", ago=timedelta(days=30), sensor=MISSED_STRETCHES_SENSOR),
        finished("forecast-old", ago=timedelta(days=30)),
        finished("latest-eth-view", ago=timedelta(days=30), sensor=AUTOMATION_SENSOR),
    ]
    assert deletable_runs(runs, NOW, WEEK, keep={"latest-eth-view"}) == [
        "speed-old",
        "automation-old",
        "canceled-old",
        "retention-old",
    ]
    assert deletable_runs(runs, NOW, timedelta(days=365)) == []


def _kept_by_reference(run: FinishedRun, now: datetime, window: timedelta, keep: set[str]) -> bool:
    """The rule as the README states it: what is kept, whatever else is deleted."""
    if run.status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED):
        return True  # failed or unfinished
    if run.sensor_name not in (SPEED_REFRESH_SENSOR, AUTOMATION_SENSOR) and run.job_name != RUN_RETENTION_JOB:
        return True  # batch, backfill, forecast, or anything launched by hand
    if now - run.finished_at <= window:
        return True  # young
    return run.run_id in keep  # the latest view of some symbol


RUNS = st.builds(
    FinishedRun,
    run_id=st.uuids().map(str),
    job_name=st.sampled_from(["__ASSET_JOB", RUN_RETENTION_JOB, "batch_daily_refresh", "forecast_graph"]),
    status=st.sampled_from(list(DagsterRunStatus)),
    sensor_name=st.sampled_from([None, SPEED_REFRESH_SENSOR, AUTOMATION_SENSOR, MISSED_STRETCHES_SENSOR]),
    finished_at=st.integers(0, 20 * 86_400).map(lambda seconds: NOW - timedelta(seconds=seconds)),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    runs=st.lists(RUNS, max_size=30, unique_by=lambda run: run.run_id),
    window_seconds=st.integers(1, 15 * 86_400),
    data=st.data(),
)
def test_deletable_runs_agree_with_the_reference_rule(runs, window_seconds, data):
    window = timedelta(seconds=window_seconds)
    keep = set(data.draw(st.lists(st.sampled_from([r.run_id for r in runs]))) if runs else [])
    deleted = deletable_runs(runs, NOW, window, keep)
    assert deleted == [r.run_id for r in runs if not _kept_by_reference(r, NOW, window, keep)]
    assert not [r for r in runs if r.run_id in deleted and r.status == DagsterRunStatus.FAILURE]


SYMBOLS = ["BTCUSDT", "ETHUSDT"]
SPEED_TAGS = {SENSOR_NAME_TAG: SPEED_REFRESH_SENSOR, REFRESH_TAG[0]: REFRESH_TAG[1]}
AUTOMATION_TAGS = {SENSOR_NAME_TAG: AUTOMATION_SENSOR}


# Stand-ins for the project's assets: the retention job tells runs apart by their tags and job names, and
# keeps the run holding each symbol's latest unified_view materialization.
@asset(name=UNIFIED_VIEW, partitions_def=StaticPartitionsDefinition(SYMBOLS))
def unified_view_stand_in(context) -> None:
    if context.run.tags.get("fail") == "yes":
        raise RuntimeError("a refresh that failed")


@asset(name=FORECASTS)
def forecasts_stand_in() -> None:
    pass


@op
def nothing_to_do() -> None:
    pass


@job(name="batch_daily_refresh")
def batch_daily_refresh_stand_in():
    nothing_to_do()


@job
def refresh_stand_in():  # for runs that are canceled or never start, so nothing executes
    nothing_to_do()


def _refresh(instance, symbol, tags) -> str:
    result = materialize(
        [unified_view_stand_in], partition_key=symbol, instance=instance, tags=tags, raise_on_error=False
    )
    return result.run_id


def test_the_retention_job_deletes_old_routine_refreshes_and_keeps_the_rest(storage_instance, project_home):
    instance: DagsterInstance = storage_instance
    project_home(extra='[dagster]\nrun_retention = "10m"\n')
    settings = load_settings()
    window = settings.dagster.run_retention
    real_retention, _ = build_run_retention(settings)

    # Runs that finish before `split` are older than the window once the job's clock reads split + window.
    retention_earlier = real_retention.execute_in_process(instance=instance).run_id
    speed_old = [_refresh(instance, "BTCUSDT", SPEED_TAGS) for _ in range(2)]
    automation_old = _refresh(instance, "BTCUSDT", AUTOMATION_TAGS)
    canceled = instance.create_run_for_job(refresh_stand_in, tags=SPEED_TAGS)
    instance.report_run_canceled(canceled)
    failed_old = _refresh(instance, "BTCUSDT", SPEED_TAGS | {"fail": "yes"})
    eth_latest = _refresh(instance, "ETHUSDT", SPEED_TAGS)
    not_started = instance.create_run_for_job(refresh_stand_in, tags=AUTOMATION_TAGS).run_id
    batch = batch_daily_refresh_stand_in.execute_in_process(
        instance=instance, tags={"dagster/schedule_name": "batch_daily_refresh_schedule"}
    ).run_id
    gap_backfill = batch_daily_refresh_stand_in.execute_in_process(
        instance=instance, tags={SENSOR_NAME_TAG: MISSED_STRETCHES_SENSOR}
    ).run_id
    forecast = materialize([forecasts_stand_in], instance=instance).run_id
    split = datetime.now(UTC)
    speed_new = _refresh(instance, "BTCUSDT", SPEED_TAGS)

    statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in [failed_old, speed_new, not_started]}
    assert statuses == {
        failed_old: DagsterRunStatus.FAILURE,
        speed_new: DagsterRunStatus.SUCCESS,
        not_started: DagsterRunStatus.NOT_STARTED,
    }
    retention, _ = build_run_retention(settings, now=lambda: split + window)
    result = retention.execute_in_process(instance=instance)
    assert result.success

    deleted = [*speed_old, automation_old, canceled.run_id, retention_earlier]
    kept = [failed_old, eth_latest, not_started, batch, gap_backfill, forecast, speed_new, result.run_id]
    assert [run_id for run_id in deleted if instance.get_run_by_id(run_id) is not None] == []
    assert [run_id for run_id in kept if instance.get_run_by_id(run_id) is None] == []
    metadata = _op_metadata(result)
    assert metadata["deleted_refresh_runs"] == 4 and metadata["deleted_retention_runs"] == 1
    # The views' history still says when each symbol was last built.
    assert _latest_view_run(instance, "ETHUSDT") == eth_latest and _latest_view_run(instance, "BTCUSDT") == speed_new

    runs_dir = Path(instance.root_directory) / "history" / "runs"
    if (runs_dir / f"{speed_new}.db").exists():  # Dagster's SQLite storage: one event-log file per run
        assert metadata["bytes_freed"] > 0
        assert [r for r in deleted if (runs_dir / f"{r}.db").exists()] == []
        assert [r for r in deleted if (Path(instance.root_directory) / "storage" / r).exists()] == []
        assert (runs_dir / f"{eth_latest}.db").exists()

    again = retention.execute_in_process(instance=instance)
    assert _op_metadata(again)["deleted_refresh_runs"] == 0 and instance.get_run_by_id(speed_new) is not None


def _op_metadata(result) -> dict:
    [output] = [event for event in result.all_events if event.is_successful_output]
    return {key: value.value for key, value in output.event_specific_data.metadata.items()}


def _latest_view_run(instance, symbol) -> str:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(UNIFIED_VIEW), asset_partitions=[symbol]), limit=1
    ).records
    return records[0].run_id


def test_the_schedule_runs_the_job_often_enough_for_the_window(project_home):
    project_home()
    defs = build_definitions(load_settings())
    schedule = defs.resolve_schedule_def(RUN_RETENTION_SCHEDULE)
    assert schedule.job_name == RUN_RETENTION_JOB and schedule.default_status.value == "RUNNING"
    assert schedule.cron_schedule == "25 * * * *"  # the default week: hourly
    assert retention_cron(timedelta(hours=6)) == "*/10 * * * *"
    assert retention_cron(timedelta(minutes=10)) == "*/5 * * * *"


def test_the_written_dagster_yaml_purges_old_ticks_and_loads(tmp_path):
    config = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    for kind in ("schedule", "sensor"):
        assert config["retention"][kind]["purge_after_days"] == {"skipped": 1, "success": 3, "failure": 30}
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # Dagster validates the keys
        assert instance.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 1
