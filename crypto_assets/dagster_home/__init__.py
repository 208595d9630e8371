"""The Dagster instance the CLI runs on when it owns one: a DAGSTER_HOME with a ``dagster.yaml`` of documented
keys only (Dagster's stock SQLite storage, or its PostgreSQL storage for shared deployments).

A deployment that brings its own instance keeps it: the code location needs nothing from the instance beyond
what every Dagster instance offers.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"  # read by dagster.yaml, so the password is never written to a file
MARKER = "# Written by crypto-assets"  # a dagster.yaml starting with it is rewritten; remove the line to keep edits

SQLITE_YAML = f"""\
{MARKER}: Dagster's stock SQLite storage under this directory.
# Delete the line above to keep your own edits (see Dagster's dagster.yaml reference).
telemetry:
  enabled: false
"""

POSTGRES_YAML = f"""\
{MARKER}: Dagster's PostgreSQL storage (runs, event log, schedules), from ${POSTGRES_URL_ENV}.
# Delete the line above to keep your own edits (see Dagster's dagster.yaml reference).
telemetry:
  enabled: false
storage:
  postgres:
    postgres_url:
      env: {POSTGRES_URL_ENV}
"""

EVENT_BATCH_SIZE = 1000  # events of one step handed to the storage at once (a step's months fit in one)


def tune_event_writes() -> None:
    """Dagster's environment settings for event writes, read by every Dagster process that creates or executes
    a run (CLI, webserver, daemon and run workers inherit them; a deployment may set them too):

    * one planned event per asset for a single-run range backfill instead of one per month partition; per
      Dagster, partitions of a failed range run are then not individually marked as failed;
    * a step's per-partition materializations handed to the event log storage as one batch, which Dagster's
      PostgreSQL storage inserts in one statement (its SQLite storage stores them one by one).
    """
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))


def responsive_daemon_yaml() -> str:
    """Documented dagster.yaml keys that make a UI launch start quickly on one machine: the run queue is
    read every second (default 5) and the backfill and sensor daemons work in threads, so submitting a
    backfill's run or evaluating the sensor does not wait behind the other daemons' work. Run monitoring fails
    a run whose worker died, once it passes its ``dagster/max_runtime`` tag (the routine refreshes carry one)
    or hangs in STARTING for 10 minutes, so a killed code server never leaves a run STARTED for ever."""
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
run_monitoring:
  enabled: true
  start_timeout_seconds: 600
  poll_interval_seconds: 30
"""


# Days each kind of schedule and sensor tick is kept (Dagster's `retention: purge_after_days`): the sensors tick
# every 30 seconds, thousands of ticks a day, so skips go after a day; failures stay longest.
TICK_RETENTION_DAYS = {"skipped": 1, "success": 3, "failure": 30}


def tick_retention_yaml() -> str:
    """Documented dagster.yaml keys that purge old schedule and sensor ticks (the automation sensor's
    included); by default Dagster keeps skipped sensor ticks seven days and every other tick forever."""
    days = "".join(f"      {kind}: {n}\n" for kind, n in TICK_RETENTION_DAYS.items())
    return "retention:\n" + "".join(f"  {kind}:\n    purge_after_days:\n{days}" for kind in ("schedule", "sensor"))


def write_workspace_yaml(home: Path, host: str, port: int, location_name: str) -> Path:
    """``home/workspace.yaml``: the one code server the webserver and the daemon both load (``-w``)."""
    home.mkdir(parents=True, exist_ok=True)
    workspace = home / "workspace.yaml"
    tmp = workspace.with_name(".workspace.yaml.tmp")
    tmp.write_text(
        "# Written by crypto-assets up on every start: the code server it runs for the location.\n"
        f"load_from:\n  - grpc_server:\n      host: {host}\n      port: {port}\n      location_name: {location_name}\n"
    )
    tmp.replace(workspace)
    return workspace


class DagsterHomeError(ValueError):
    """The instance asked for cannot be configured (e.g. PostgreSQL over a user's own dagster.yaml)."""


def write_dagster_yaml(home: Path, postgres: bool = False) -> Path:
    """``home/dagster.yaml`` for the stock SQLite (default) or PostgreSQL storage.

    A file this module wrote is rewritten to match; a user's own file is kept as it is, and asking for
    PostgreSQL over one that does not use it is an error rather than a silent switch of databases.
    """
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = (POSTGRES_YAML if postgres else SQLITE_YAML) + responsive_daemon_yaml() + tick_retention_yaml()
    if config.exists() and not config.read_text().startswith(MARKER):
        if postgres and "postgres" not in config.read_text():
            raise DagsterHomeError(
                f"{config} is your own and does not configure PostgreSQL storage: add a `storage: postgres:` "
                f"block (see the README) or remove the file"
            )
        return config
    if not config.exists() or config.read_text() != wanted:
        tmp = config.with_name(".dagster.yaml.tmp")
        tmp.write_text(wanted)
        tmp.replace(config)
    return config


def psycopg2_url(url: str) -> str:
    """``url`` with the psycopg2 driver named: dagster-postgres speaks psycopg2, while SQLAlchemy 2.1 opens a
    bare ``postgresql://`` URL with psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def prepare_dagster_home(home: Path, postgres_url: str | None = None) -> Path:
    """Make ``home`` this process's DAGSTER_HOME, configured as above; returns its resolved path.

    ``postgres_url`` (or ``$DAGSTER_POSTGRES_URL``) selects Dagster's PostgreSQL storage; the URL stays in the
    environment of this process and the Dagster processes it starts.
    """
    home = home.resolve()
    postgres_url = postgres_url or os.environ.get(POSTGRES_URL_ENV)
    if postgres_url:
        os.environ[POSTGRES_URL_ENV] = psycopg2_url(postgres_url)
    write_dagster_yaml(home, postgres=bool(os.environ.get(POSTGRES_URL_ENV)))
    os.environ["DAGSTER_HOME"] = str(home)
    tune_event_writes()
    return home


def dagster_home_for(settings, postgres_url: str | None = None) -> Path:
    """The CLI's persistent DAGSTER_HOME (runs, event log, schedules): ``$DAGSTER_HOME`` if set, else
    ``<home>/dagster``. Exported, so the webserver, daemon and run workers started from here share it."""
    return prepare_dagster_home(Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster"), postgres_url)


def postgres_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dagster-postgres",
        metavar="URL",
        help=f"keep Dagster's runs, event log and schedules in PostgreSQL, e.g. "
        f"postgresql://user:password@127.0.0.1:5432/dagster (default: ${POSTGRES_URL_ENV} if set, else SQLite "
        f"files under DAGSTER_HOME)",
    )


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
