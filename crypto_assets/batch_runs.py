"""Launch the batch graph over a range of months as one run, the way a UI backfill with
``BackfillPolicy.single_run()`` does, on the engine ``spark.engine`` chooses; used by the CLI, the tests and the
benchmarks. It puts the batch layer and its engine together, so it sits above both packages."""

from __future__ import annotations

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, materialize

from crypto_assets.batch import defs as batch_defs
from crypto_assets.batch.defs import BATCH
from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG, batch_partitions
from crypto_assets.dagster_home import sigterm_kept, tune_event_writes
from crypto_assets.settings import Settings
from crypto_assets.spark import defs as engine_defs


def whole_history(settings: Settings) -> tuple[str, str]:
    """First and last month partition keys of the batch graph."""
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
    tune_event_writes()
    defs = Definitions.merge(batch_defs.build_defs(settings), engine_defs.build_defs(settings))
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
