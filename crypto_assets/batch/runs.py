"""Launch the batch graph over a range of months as one run, the way a UI backfill with
``BackfillPolicy.single_run()`` does; used by the CLI, the tests and the benchmarks."""

from __future__ import annotations

from dagster import AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

from crypto_assets.dagster_home import sigterm_kept, tune_event_writes
from crypto_assets.settings import Settings

BATCH = AssetSelection.groups("batch")
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def whole_history(settings: Settings) -> tuple[str, str]:
    """First and last month partition keys of the batch graph."""
    from crypto_assets.batch.partitions import batch_partitions

    partitions = batch_partitions(settings)
    return partitions.get_first_partition_key(), partitions.get_last_partition_key()


def materialize_batch_range(
    instance: DagsterInstance,
    settings: Settings,
    first: str | None = None,
    last: str | None = None,
    log_level: str = "INFO",
) -> ExecuteInProcessResult:
    """Materialize every batch asset for the months ``first``..``last`` (default: the whole history)."""
    from crypto_assets.definitions import build_definitions

    tune_event_writes()
    defs = build_definitions(settings)
    default_first, default_last = whole_history(settings)
    with sigterm_kept():
        return materialize(
            list(defs.assets),
            selection=BATCH,
            instance=instance,
            resources=defs.resources,
            tags={RANGE_START_TAG: first or default_first, RANGE_END_TAG: last or default_last},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            raise_on_error=False,
        )
