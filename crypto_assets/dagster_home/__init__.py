"""The Dagster instance the project runs on: its dagster.yaml and the settings of its event writes.

The CLI, the tests and the benchmarks all prepare a DAGSTER_HOME through :func:`prepare_dagster_home`, so a
benchmarked run is a run as users get it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAGSTER_YAML = """\
# Written by crypto-assets on first start; edit freely (see Dagster's dagster.yaml reference).
telemetry:
  enabled: false
# Dagster's SQLite event log (same files and schema), writing a range run's per-partition
# materializations in one transaction: crypto_assets/dagster_home/event_log.py.
event_log_storage:
  module: crypto_assets.dagster_home.event_log
  class: BatchedSqliteEventLogStorage
  config:
    base_dir: {event_log_dir}
"""

EVENT_BATCH_SIZE = 1000  # events of one step handed to the storage at once (a step's months fit in one)


def tune_event_writes() -> None:
    """Environment read by every Dagster process that creates or executes a run (CLI, webserver, daemon, run
    workers inherit it):

    * one planned event per asset for a single-run range backfill instead of one per month partition; per
      Dagster, partitions of a failed range run are then not individually marked as failed;
    * a step's per-partition materializations stored as one batch (see ``event_log.py``).
    """
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))


def responsive_daemon_yaml() -> str:
    """Documented dagster.yaml keys that make a UI launch start quickly on one machine: the run queue is
    read every second (default 5) and the backfill and sensor daemons work in threads, so submitting a
    backfill's run or evaluating the sensor does not wait behind the other daemons' work."""
    return """\
run_queue:
  dequeue_interval_seconds: 1
  dequeue_use_threads: true
backfills:
  use_threads: true
  num_workers: 2
  num_submit_workers: 2
sensors:
  use_threads: true
  num_workers: 2
"""


def write_workspace_yaml(home: Path, host: str, port: int, location_name: str) -> Path:
    """``home/workspace.yaml``: the one code server the webserver and the daemon both load (``-w``)."""
    home.mkdir(parents=True, exist_ok=True)
    workspace = home / "workspace.yaml"
    workspace.write_text(
        "# Written by crypto-assets up on every start: the code server it runs for the location.\n"
        f"load_from:\n  - grpc_server:\n      host: {host}\n      port: {port}\n      location_name: {location_name}\n"
    )
    return workspace


def write_dagster_yaml(home: Path) -> Path:
    """``home/dagster.yaml`` unless one exists (a user's own instance configuration is kept)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            DAGSTER_YAML.format(event_log_dir=home.resolve() / "history" / "runs") + responsive_daemon_yaml()
        )
    return config


def prepare_dagster_home(home: Path) -> Path:
    """Make ``home`` this process's DAGSTER_HOME, configured as above; returns its resolved path."""
    home = home.resolve()
    write_dagster_yaml(home)
    os.environ["DAGSTER_HOME"] = str(home)
    tune_event_writes()
    return home


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Run Dagster in process without losing this process's SIGTERM disposition.

    Around an in-process run Dagster points SIGTERM at whatever handles SIGINT, and leaves it so. Started
    under ``nohup`` or ``&`` (SIGINT ignored), the process would then ignore SIGTERM, and so would every child
    it starts afterwards: they could no longer be stopped with ``terminate()`` or ``crypto-assets down``.
    """
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)
