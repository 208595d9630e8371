"""The project's Dagster event log against Dagster's own: the same range run leaves the same records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from dagster import AssetKey, DagsterInstance
from dagster._core.instance.ref import InstanceRef

from crypto_assets.batch.runs import materialize_batch_range
from crypto_assets.definitions import build_definitions
from crypto_assets.dagster_home.event_log import BatchedSqliteEventLogStorage
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at

ASSETS = ["minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input"]


def default_instance(path: Path) -> DagsterInstance:
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(path)))


def summary(instance: DagsterInstance, check_keys) -> dict:
    """What the UI reads back: events by type, materialized partitions, the latest materialization, the
    asset-key rows and the check executions per partition."""
    [run] = instance.get_runs()
    records = instance.get_records_for_run(run.run_id, limit=10_000).records
    events = Counter(r.event_log_entry.dagster_event_type.value for r in records if r.event_log_entry.is_dagster_event)
    out: dict = {"events": events}
    for name in ASSETS:
        key = AssetKey(name)
        partitions = instance.get_materialized_partitions(key)
        latest = instance.get_latest_materialization_event(key).asset_materialization
        [entry] = instance.get_asset_records([key])
        last = entry.asset_entry.last_materialization_record.event_log_entry
        checks = {}
        for check_key in sorted((k for k in check_keys if k.asset_key == key), key=lambda k: k.name):
            history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=10_000)
            checks[check_key.name] = sorted(((h.partition, h.status.value) for h in history), key=str)
        out[name] = {
            "partitions": sorted(partitions),
            "latest": (latest.partition, latest.metadata),
            "last_record": (last.dagster_event.partition, last.run_id == run.run_id, last.asset_materialization.metadata),
            "last_run_id": entry.asset_entry.last_run_id == run.run_id,
            "checks": checks,
        }
    return out


def test_a_range_run_stores_what_dagsters_own_storage_stores(shared_data, project_home, tmp_path, monkeypatch):
    project_home([str(shared_data / "binance_spot_1m" / "2021")])
    check_keys = build_definitions(load_settings()).resolve_asset_graph().asset_check_keys
    batches = []
    store = BatchedSqliteEventLogStorage._store_asset_events

    def counting(self, events):
        batches.append(len(events))
        return store(self, events)

    monkeypatch.setattr(BatchedSqliteEventLogStorage, "_store_asset_events", counting)

    with instance_at(tmp_path / "project") as ours:
        assert isinstance(ours.event_log_storage, BatchedSqliteEventLogStorage)
        assert materialize_batch_range(ours, load_settings(), "2021-03-01", "2021-06-01").success
        mine = summary(ours, check_keys)
    # Each asset step's four months went to the storage as one batch.
    assert batches and max(batches) >= 4 and sum(batches) >= 4 * len(ASSETS)

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    with default_instance(tmp_path / "dagster_default") as theirs:
        assert type(theirs.event_log_storage) is not BatchedSqliteEventLogStorage
        assert materialize_batch_range(theirs, load_settings(), "2021-03-01", "2021-06-01").success
        reference = summary(theirs, check_keys)

    assert mine["events"]["ASSET_MATERIALIZATION"] == 4 * len(ASSETS)
    for name in ASSETS:
        assert mine[name]["partitions"] == ["2021-03-01", "2021-04-01", "2021-05-01", "2021-06-01"]
        assert mine[name]["last_record"][0] == "2021-06-01" and mine[name]["last_run_id"]
    assert mine == reference
