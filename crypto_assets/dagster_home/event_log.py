"""Dagster's SQLite event log, writing a range run's materializations in one transaction per shard.

A single-run backfill of the whole history records one materialization per month partition per asset, ~1,100
events. Dagster's SQLite storage writes each in its own connections and transactions (run shard, then the
cross-run index), with a fresh engine each time, so a run spent more time storing events than transforming
data. Dagster hands a step's partition events over as one batch when ``DAGSTER_EVENT_BATCH_SIZE`` is set; this
storage writes such a batch with one transaction on each shard and updates each asset's row once per batch. A
planned check of a range run gets one row per partition, each with the same serialized event: serialized once
here. Everything else, reads included, is Dagster's own ``SqliteEventLogStorage``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster._core.event_api import EventLogEntry
from dagster._core.events import ASSET_EVENTS
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._serdes import serialize_value


def _is_plain_asset_event(event: EventLogEntry) -> bool:
    """Asset events, which store_event mirrors into the index and nothing else (check and run-status events
    take other paths there)."""
    dagster_event = event.dagster_event
    return dagster_event is not None and dagster_event.asset_key is not None and dagster_event.event_type in ASSET_EVENTS


def _row_key(event: EventLogEntry) -> tuple:
    return event.get_dagster_event().asset_key, event.get_dagster_event().event_type


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` uses one transaction per shard.

    The rows written are those ``store_event`` writes for each event, in the same order. Once a run shard's
    transaction is committed, a failing index transaction falls back to mirroring its events one by one
    rather than raising: Dagster answers a raising batch by storing every event again, one by one.
    """

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)  # Dagster's own builds its base class by name

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        run: list[EventLogEntry] = []  # consecutive plain asset events of one run, kept in order
        for event in events:
            plain = _is_plain_asset_event(event)
            if run and not (plain and event.run_id == run[0].run_id):
                self._store_asset_events(run)
                run = []
            if plain:
                run.append(event)
            else:  # check, run-status and other events: Dagster's own path
                self.store_event(event)
        if run:
            self._store_asset_events(run)

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        try:
            with self.index_transaction() as conn:
                self._mirror(conn, events, statements)
        except Exception:  # the run shard has them: mirror one by one rather than raise
            for event, statement in zip(events, statements, strict=True):
                with self.index_transaction() as conn:
                    self._mirror(conn, [event], [statement])

    def _mirror(self, conn, events: Sequence[EventLogEntry], statements: Sequence) -> None:
        event_ids = [conn.execute(statement).inserted_primary_key[0] for statement in statements]
        self._store_asset_event_tags(conn, events, event_ids)
        # An asset's row in the asset-key table is overwritten by each of its events, and events of one kind
        # set the same columns, so of a stretch of one asset's events of one kind only the last one counts.
        for i, (event, event_id) in enumerate(zip(events, event_ids, strict=True)):
            if i + 1 == len(events) or _row_key(events[i + 1]) != _row_key(event):
                self._store_asset_event(conn, event, event_id)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """Dagster's rows (one per partition of the run), with the event serialized once instead of per row."""
        planned = event.get_dagster_event().event_specific_data
        partition_keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        if not partition_keys:
            return
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in partition_keys])
