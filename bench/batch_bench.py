#!/usr/bin/env python
"""Benchmark of the batch layer on the synthetic history: Polars library path, Dagster run, plain pandas.

One invocation measures, on the same data and in the same run:

1. ``ingest``: CSV -> ``minute_raw`` (+ quarantine) with :func:`crypto_assets.batch.minute_ingest.ingest_window`
   over 2012-01-01 .. 2026-01-01: rows/s and peak RSS, next to ``floor``, the least any ingest must do (a bare
   ``polars.read_csv`` of the same CSVs plus one LZ4 parquet write per symbol), run in the same rounds; and
   ``ingest_one``: ``crypto-assets ingest``'s merge of one file straddling two months into the lake holding the whole
   history, which must rewrite only that file's months;
2. ``daily_raw``, ``daily_filled``, ``prophet_input``: the pipeline steps of :mod:`crypto_assets.batch.pipeline`
   over the same window ("daily aggregation of the whole history" is ``build_daily_raw`` alone);
3. ``dagster``: the six batch assets (exchange backfill off) materialized as ONE single-run backfill over the
   whole partition range, on Dagster's stock SQLite instance in a fresh temporary DAGSTER_HOME (the dagster.yaml
   the CLI writes), next to the sum of 1 + 2 and the gap report (``minute_gaps``) called directly;
   ``dagster_postgres``: the same run on Dagster's PostgreSQL storage, on a throwaway local server;
4. ``pandas_*``: the same steps written in plain pandas (read_csv, validate, sort, dedupe, per-(symbol, month)
   parquet, groupby daily aggregation, calendar reindex + ffill, rolling MA7/MA30), timed step by step.

Every measured stage runs in its own fresh subprocess (this script re-invoked with ``--stage``), which prints
its seconds (and, for the ingest stages, its CPU seconds) and ``getrusage(RUSAGE_SELF).ru_maxrss`` as JSON, so one stage's memory never pollutes another's.
Fast stages are repeated ``--repeat`` times (a fresh process each time) and the median is reported; repetitions
go round robin over the stages, so machine noise falls on both sides of each comparison.

    PYTHONPATH=. python bench/batch_bench.py                 # full scale, ~4 minutes
    PYTHONPATH=. python bench/batch_bench.py --scale small   # seconds, for a smoke test

The library is only called, never modified. Inside a stage the script wraps a few library functions
(``read_layout``, ``merge_ranked``, ``write_months``) with timers to split a stage into steps; the wrappers
call the originals unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The ingest_baseline stage imports the library of an earlier checkout (--baseline) instead of this one.
BASELINE_ENV = "BATCH_BENCH_BASELINE"
if os.environ.get(BASELINE_ENV):
    sys.path[:] = [os.environ[BASELINE_ENV]] + [p for p in sys.path if Path(p or ".").resolve() != REPO]
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WINDOW_START = datetime(2012, 1, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT")  # crypto_assets.settings.DEFAULT_SYMBOLS
RESULT_MARKER = "BENCH_RESULT "

# Targets from the issue: (label, comparison, value).
TARGET_INGEST_ROWS_PER_S = 2_000_000
TARGET_INGEST_RSS_MB = 2 * 1024
TARGET_FLOOR_RATIO = 2.0  # ingest seconds / read+write floor seconds, measured in the same round
TARGET_DAILY_AGG_S = 2.0
TARGET_DAGSTER_RATIO = 1.5

# Stage name -> (kind, description). "slow" stages run --repeat-slow times, the others --repeat times.
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("setup", "synthetic Kaggle CSVs (cached by a sidecar)"),
    "floor": ("slow", "read+write floor: bare polars.read_csv of the same CSVs + one LZ4 parquet write per symbol"),
    "ingest": ("slow", "polars: ingest_window CSV -> minute_raw, 2012-01 .. 2026-01"),
    "ingest_baseline": ("slow", "the same ingest with the library of an earlier checkout (only with --baseline)"),
    "ingest_one": ("slow", "polars: ingest_files of one ~1-month file into the lake holding the whole history"),
    "daily_raw": (
        "fast",
        "polars: build_daily_raw (daily aggregation of the whole history)",
    ),
    "daily_filled": (
        "fast",
        "polars: build_daily_filled (calendar + ffill + MA7/MA30)",
    ),
    "prophet_input": ("fast", "polars: build_prophet_input"),
    "minute_gaps": ("fast", "polars: find_gaps + write_gap_report (the gap report of minute_raw)"),
    "pandas_ingest": (
        "slow",
        "pandas: read_csv, validate, sort, dedupe, write per (symbol, month)",
    ),
    "pandas_daily_raw": (
        "fast",
        "pandas: read minute parquet, sort, groupby daily, write",
    ),
    "pandas_daily_filled": (
        "fast",
        "pandas: read daily, reindex + ffill, rolling MA7/MA30, write",
    ),
    "pandas_prophet_input": ("fast", "pandas: read filled, select ds/y/symbol, write"),
    "verify": ("setup", "compare the pandas lake with the polars lake"),
    "dagster": (
        "slow",
        "dagster: one single-run backfill of the batch group (6 assets, exchange backfill off), whole partition range",
    ),
    "dagster_postgres": (
        "slow",
        "the same run on Dagster's PostgreSQL storage (a throwaway local server started by the stage)",
    ),
}
DEFAULT_STAGES = list(STAGES)
# The library calls that do the work of the Dagster run's steps (exchange_backfill is off and only reads).
DIRECT_STAGES = ("ingest", "minute_gaps", "daily_raw", "daily_filled", "prophet_input")


# --------------------------------------------------------------------------------------------------------------
# Helpers shared by the stages (run inside the child process)
# --------------------------------------------------------------------------------------------------------------


def max_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads: less sensitive than wall time to a busy
    machine's other processes (though not to their cache and memory-bandwidth pressure)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Steps:
    """Accumulates named step durations: ``with steps("write"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed

    def with_rest(self, total: float, rest_name: str) -> dict[str, float]:
        """The recorded steps plus ``rest_name`` = total minus their sum, in a stable order."""
        out = {rest_name: max(total - sum(self.seconds.values()), 0.0)}
        out.update(self.seconds)
        return out


@contextlib.contextmanager
def patched(module, name: str, replacement) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def data_dir(workdir: Path, scale: str) -> Path:
    return workdir / f"data-{scale}"


def lake_dir(workdir: Path) -> Path:
    return workdir / "lake"


def pandas_lake_dir(workdir: Path) -> Path:
    return workdir / "pandas_lake"


def source_files(workdir: Path, scale: str) -> list[tuple[Path, str, int]]:
    """(path, symbol, rank) of the synthetic CSVs, in the order discover_sources gives them."""
    files = sorted(data_dir(workdir, scale).glob("*_kaggle_1m.csv"))
    return [(p.resolve(), p.name.split("_", 1)[0], rank) for rank, p in enumerate(files)]


def reset_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------------------------------------------
# Polars library stages
# --------------------------------------------------------------------------------------------------------------


def stage_generate(args) -> dict:
    from crypto_assets.batch import synthetic

    out = data_dir(args.workdir, args.scale)
    written: dict[str, int] = {}
    t0 = time.perf_counter()
    paths = synthetic.generate_dataset(
        out,
        scale=args.scale,
        seed=42,
        progress=lambda symbol, rows: written.__setitem__(symbol, rows),
    )
    seconds = time.perf_counter() - t0
    one_file(args)  # the ingest_one stage's input, made here so its reading never counts in that stage's RSS
    rows = 0
    for path in paths:
        rows += json.loads(path.with_name(path.name + ".meta.json").read_text())["rows"]
    return {
        "seconds": seconds,
        "rows": rows,
        "cached": not any(written.values()),
        "bytes": sum(p.stat().st_size for p in paths),
        "files": [str(p) for p in paths],
    }


def stage_floor(args) -> dict:
    """What any ingest must at least do: parse the CSVs and write their rows once, with the lake's codec."""
    import polars as pl

    out = reset_dir(args.workdir / "floor")
    rss_before = max_rss_mb()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    rows = 0
    for path, symbol, _ in source_files(args.workdir, args.scale):
        frame = pl.read_csv(path)
        frame.write_parquet(out / f"{symbol}.parquet", compression="lz4", statistics=True)
        rows += frame.height
        del frame
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "cpu_s": cpu_seconds() - cpu0,
        "rss_before_mb": rss_before,
        "rows": rows,
        "rows_per_s": rows / seconds,
    }


def one_file(args) -> Path:
    """A Kaggle-style CSV cut from the middle of the synthetic BTCUSDT history: the 15th of a month to the 15th
    of the next, so it straddles two months (at full scale 2018-12-15 .. 2019-01-15, 44,640 rows)."""
    import polars as pl

    path = args.workdir / f"one-file-{args.scale}" / "BTCUSDT_one_1m.csv"
    if not path.is_file():
        source = pl.scan_csv(data_dir(args.workdir, args.scale) / "BTCUSDT_kaggle_1m.csv")
        low, high = (
            source.select(pl.col("Timestamp").min().alias("low"), pl.col("Timestamp").max().alias("high"))
            .collect()
            .row(0)
        )
        middle = datetime.fromtimestamp((low + high) / 2, UTC)
        first = datetime(middle.year, middle.month, 15, tzinfo=UTC)
        last = datetime(first.year + first.month // 12, first.month % 12 + 1, 15, tzinfo=UTC)
        rows = source.filter(
            pl.col("Timestamp").is_between(first.timestamp(), last.timestamp(), closed="left")
        ).collect()
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.write_csv(path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    old = time.time() - 3600  # a file that has been still for an hour: landing does not wait for it to settle
    os.utime(path, (old, old))
    return path


def stage_ingest_one(args) -> dict:
    """``crypto-assets ingest FILE`` into the lake the ``ingest`` stage left: it must touch only the file's months."""
    from crypto_assets.batch import minute_ingest
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    lake, landing = lake_dir(args.workdir), reset_dir(args.workdir / "landing")
    minute_files = sorted((lake / "minute_raw").rglob("*.parquet"))
    assert minute_files, "run the ingest stage first: this stage needs the lake of the whole history"
    before = {p: p.stat().st_mtime_ns for p in minute_files}
    path = one_file(args)
    files, problems = discover_sources([SourceSpec(str(path), "BTCUSDT")], list(SYMBOLS))
    assert files and not problems, (files, problems)
    rss_before = max_rss_mb()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    result = minute_ingest.ingest_files(files, lake, landing, list(SYMBOLS))
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    assert not result.failed_sources, result.failed_sources
    after = {p: p.stat().st_mtime_ns for p in sorted((lake / "minute_raw").rglob("*.parquet"))}
    touched = sorted(str(p.relative_to(lake)) for p in after if after[p] != before.get(p))
    assert set(after) == set(before), "the one-file ingest added or removed minute_raw files"
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "rows": result.rows_read,
        "span": [result.landed[0].entry.first, result.landed[0].entry.last],
        "minute_files_in_lake": len(after),
        "minute_files_written": len(result.minute.files),
        "minute_files_touched": touched,
        "duplicates_removed": result.duplicates_removed,
        "conflicts": result.conflicts.height,
    }


def stage_ingest_baseline(args) -> dict:
    """``ingest_window`` of the --baseline checkout on the same CSVs, into its own lake, untimed steps."""
    import crypto_assets
    from crypto_assets.batch import minute_ingest
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    assert Path(crypto_assets.__file__).resolve().is_relative_to(Path(os.environ[BASELINE_ENV]).resolve())
    lake = reset_dir(args.workdir / "lake-baseline")
    sources, problems = discover_sources([SourceSpec(str(data_dir(args.workdir, args.scale)))], list(SYMBOLS))
    assert sources and not problems, (sources, problems)
    rss_before = max_rss_mb()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    result = minute_ingest.ingest_window(sources, lake, list(SYMBOLS), WINDOW_START, WINDOW_END)
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    assert not result.failed_sources, result.failed_sources
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "rows": result.rows_read,
        "rows_per_s": result.rows_read / seconds,
        "minute_rows": result.minute.rows,
    }


def stage_ingest(args) -> dict:
    from crypto_assets.batch import minute_ingest
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    lake = reset_dir(lake_dir(args.workdir))
    sources, problems = discover_sources([SourceSpec(str(data_dir(args.workdir, args.scale)))], list(SYMBOLS))
    assert sources and not problems, (sources, problems)
    steps = Steps()

    rss_before = max_rss_mb()
    with (
        patched(
            minute_ingest,
            "read_layout",
            steps.wrap("csv read (read_layout)", minute_ingest.read_layout),
        ),
        patched(
            minute_ingest,
            "merge_ranked",
            steps.wrap("sort + merge + dedupe (merge_ranked)", minute_ingest.merge_ranked),
        ),
        patched(
            minute_ingest,
            "write_months",
            steps.wrap("parquet write (write_months)", minute_ingest.write_months),
        ),
        patched(
            minute_ingest,
            "_write_unparsed",
            steps.wrap("parquet write (write_months)", minute_ingest._write_unparsed),
        ),
    ):
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        result = minute_ingest.ingest_window(sources, lake, list(SYMBOLS), WINDOW_START, WINDOW_END)
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
    assert not result.failed_sources, result.failed_sources
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "rows": result.rows_read,
        "rows_per_s": result.rows_read / seconds,
        "minute_rows": result.minute.rows,
        "duplicates_removed": result.duplicates_removed,
        "quarantined": result.quarantined,
        "files": len(result.minute.files),
        "bytes_written": result.minute.bytes_written,
        "steps": steps.with_rest(seconds, "validate, split, concat (rest)"),
    }


def _pipeline_stage(args, builder_name: str) -> dict:
    from crypto_assets.batch import pipeline

    builder = getattr(pipeline, builder_name)
    steps = Steps()
    rss_before = max_rss_mb()
    with patched(
        pipeline,
        "write_months",
        steps.wrap("parquet write (write_months)", pipeline.write_months),
    ):
        t0 = time.perf_counter()
        step = builder(lake_dir(args.workdir), list(SYMBOLS), WINDOW_START, WINDOW_END)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "rows": step.frame.height,
        "files": len(step.summary.files),
        "steps": steps.with_rest(seconds, "read + transform (rest)"),
    }


def stage_daily_raw(args) -> dict:
    return _pipeline_stage(args, "build_daily_raw")


def stage_daily_filled(args) -> dict:
    return _pipeline_stage(args, "build_daily_filled")


def stage_prophet_input(args) -> dict:
    return _pipeline_stage(args, "build_prophet_input")


def stage_minute_gaps(args) -> dict:
    """The gap report the Dagster run's minute_gaps step writes (exchange_backfill, off here, only reads it)."""
    from crypto_assets.batch.backfill.gaps import find_gaps, write_gap_report
    from crypto_assets.settings import DEFAULT_SYMBOLS

    lake = lake_dir(args.workdir)
    starts = {s.name: s.start for s in DEFAULT_SYMBOLS}
    # The Dagster run's partitions reach the running month, so its gap report does too (the data ends earlier).
    now = datetime.now(UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    rss_before = max_rss_mb()
    t0 = time.perf_counter()
    gaps = find_gaps(lake, starts, WINDOW_START, end)
    written = write_gap_report(gaps, lake, list(SYMBOLS), WINDOW_START, end)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_before_mb": rss_before, "rows": gaps.height, "files": len(written.files)}


# --------------------------------------------------------------------------------------------------------------
# Dagster
# --------------------------------------------------------------------------------------------------------------


def stage_dagster(args) -> dict:
    return _dagster_run(args)


def stage_dagster_postgres(args) -> dict:
    from crypto_assets_tests.postgres import postgres_server

    with postgres_server() as url:  # started before the clock, stopped and removed after the run
        return _dagster_run(args, postgres_url=url)


def _dagster_run(args, postgres_url: str | None = None) -> dict:
    config = (
        f'[[sources]]\npath = "{data_dir(args.workdir, args.scale).resolve()}"\n'
        "\n[exchange]\nbackfill = false\n"  # the same transforms as the direct stages; no exchange here
    )
    result = dagster_batch_run(
        args.workdir / "dagster", config, postgres_url=postgres_url, instance_parent=args.dagster_tmp
    )
    assert result["symbols"] == list(SYMBOLS), result["symbols"]
    return result


def root_cause(error) -> str:
    """The innermost error of a Dagster step failure (``SerializableErrorInfo``), in one line."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return "unknown error"
    first = error.message.strip().splitlines()[0] if error.message.strip() else ""
    return (first if first.startswith(error.cls_name) else f"{error.cls_name}: {first}")[:300]


def dagster_batch_run(
    home: Path,
    config: str,
    postgres_url: str | None = None,
    instance_parent: Path | None = None,
    months: tuple[str, str] | None = None,
) -> dict:
    """The batch group materialized as ONE single-run backfill, as the CLI launches it, on a fresh instance.

    ``home`` is emptied and gets the project home, the instance (unless ``instance_parent`` is given: then a
    fresh directory under it, removed afterwards) and a ``crypto_assets.toml`` of ``config`` under a ``home``
    line. ``months`` (first, last partition key) defaults to the whole history. Only the run is timed.
    """
    home = reset_dir(home)
    project, instance_dir = home / "project", home / "instance"
    if instance_parent:
        instance_dir = Path(tempfile.mkdtemp(prefix="crypto-assets-bench-dagster-", dir=instance_parent))
    else:
        instance_dir.mkdir()
    toml = home / "crypto_assets.toml"
    toml.write_text(f'home = "{project}"\n\n{config}')
    os.environ["CRYPTO_ASSETS_CONFIG"] = str(toml)
    os.environ.pop("CRYPTO_ASSETS_HOME", None)
    from crypto_assets.dagster_home import prepare_dagster_home

    # The dagster.yaml and event settings `crypto-assets` gives an instance: stock SQLite or PostgreSQL storage.
    prepare_dagster_home(instance_dir, postgres_url)

    t0 = time.perf_counter()
    from dagster import DagsterInstance

    import crypto_assets.definitions  # noqa: F401  (code loading, done before a run starts in Dagster too)
    from crypto_assets.batch_runs import materialize_batch_range, whole_history
    from crypto_assets.settings import load_settings

    settings = load_settings()
    first, last = months or whole_history(settings)
    setup_seconds = time.perf_counter() - t0

    rss_before = max_rss_mb()
    with DagsterInstance.local_temp(str(instance_dir)) as instance:
        t0 = time.perf_counter()
        result = materialize_batch_range(instance, settings, first, last, log_level="WARNING")
        seconds = time.perf_counter() - t0
        step_seconds = {
            s.step_key: (s.end_time - s.start_time)
            for s in instance.get_run_step_stats(result.run_id)
            if s.start_time and s.end_time
        }
        runs = len(instance.get_runs())
        events = len(instance.all_logs(result.run_id))
    if instance_parent:
        shutil.rmtree(instance_dir, ignore_errors=True)
    checks = {
        f"{e.asset_key.to_user_string()}.{e.check_name}": ("passed" if e.passed else f"failed ({e.severity.value})")
        for e in result.get_asset_check_evaluations()
    }
    failures = {e.step_key: root_cause(e.step_failure_data.error) for e in result.get_step_failure_events()}
    return {
        "seconds": seconds,
        "failures": failures,
        "rss_before_mb": rss_before,
        "setup_seconds": setup_seconds,
        "success": result.success,
        "runs": runs,
        "partition_range": [first, last],
        "events": events,
        "instance_dir": str(instance_dir),
        "lake": str(settings.lake_dir),
        "symbols": settings.symbol_names,
        "storage": "postgres" if postgres_url else "sqlite",
        "steps": step_seconds,
        "checks": checks,
    }


# --------------------------------------------------------------------------------------------------------------
# Plain pandas implementation of the same steps
# --------------------------------------------------------------------------------------------------------------

PANDAS_PRICES = ("open", "high", "low", "close")
MINUTE_COLUMNS = ["symbol", "open_time", "open", "high", "low", "close", "volume"]
EARLIEST_TIME = datetime(2009, 1, 3, tzinfo=UTC)  # crypto_assets.batch.transforms.minute.EARLIEST_TIME


def _pd_write_months(frame, lake: Path, dataset: str, time_column: str) -> tuple[int, int]:
    """One parquet file per (symbol, month), same layout and compression as the library; returns (files, rows)."""
    import pandas as pd

    times = (
        pd.DatetimeIndex(frame[time_column])
        if frame[time_column].dtype.kind == "M"
        else pd.DatetimeIndex(pd.to_datetime(frame[time_column]))
    )
    files = rows = 0
    for (symbol, year, month), part in frame.groupby([frame["symbol"], times.year, times.month], sort=False):
        path = lake / dataset / f"symbol={symbol}" / f"year={year:04d}" / f"month={month:02d}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path, engine="pyarrow", compression="lz4", index=False)
        files += 1
        rows += len(part)
    return files, rows


def _pd_read_dataset(lake: Path, dataset: str):
    import pandas as pd

    paths = sorted((lake / dataset).glob("symbol=*/year=*/month=*/part-0.parquet"))
    return pd.concat([pd.read_parquet(p, engine="pyarrow") for p in paths], ignore_index=True)


def _dates_to_python(series):
    """datetime64 day stamps -> python dates, so pyarrow writes parquet date32 like polars' Date."""
    return series.dt.date


def stage_pandas_ingest(args) -> dict:
    import numpy as np
    import pandas as pd

    lake = reset_dir(pandas_lake_dir(args.workdir))
    latest_time = datetime.now(UTC) + timedelta(days=1)
    steps = Steps()
    rss_before = max_rss_mb()
    t0 = time.perf_counter()

    with steps("csv read (pd.read_csv)"):
        parts = []
        for path, symbol, rank in source_files(args.workdir, args.scale):
            frame = pd.read_csv(path)
            frame.columns = [c.lower() for c in frame.columns]
            frame = frame.rename(columns={"timestamp": "time_raw"})
            for column in ("time_raw", *PANDAS_PRICES, "volume"):
                if frame[column].dtype != np.float64:  # a bad value makes the column object: coerce it to NaN
                    frame[column] = pd.to_numeric(frame[column], errors="coerce")
            frame["line"] = np.arange(2, len(frame) + 2, dtype=np.int64)
            frame["symbol"] = symbol
            frame["source_rank"] = np.int32(rank)
            parts.append(frame)
        raw = pd.concat(parts, ignore_index=True)
        del parts
        rows_read = len(raw)

    with steps("validate + split"):
        ts = raw["time_raw"].to_numpy()
        magnitude = np.abs(ts)
        micros = np.select(
            [magnitude < 1e11, magnitude < 1e14, magnitude < 1e17],
            [ts * 1e6, ts * 1e3, ts],
            default=ts / 1e3,
        )
        time_null = ~np.isfinite(micros)
        micros_int = np.where(time_null, 0, np.floor(np.where(time_null, 0.0, micros))).astype(np.int64)
        open_time = pd.to_datetime(micros_int, unit="us", utc=True)
        raw["open_time"] = open_time.where(~time_null)
        earliest = pd.Timestamp(EARLIEST_TIME).value // 1000
        latest = pd.Timestamp(latest_time).value // 1000
        out_of_range = ~time_null & ((micros_int < earliest) | (micros_int > latest))
        rules = {
            "open_time: unparseable timestamp": time_null,
            "open_time: out of range": out_of_range,
            "open_time: not on a minute boundary": ~time_null & (micros_int % 60_000_000 != 0),
        }
        values = {c: raw[c].to_numpy() for c in (*PANDAS_PRICES, "volume")}
        for name in PANDAS_PRICES:  # NaN: pandas does not tell a missing value from a literal NaN
            rules[f"{name}: missing or not a number"] = np.isnan(values[name])
            rules[f"{name}: zero or negative price"] = values[name] <= 0
        rules["volume: missing or not a number"] = np.isnan(values["volume"])
        rules["volume: negative"] = values["volume"] < 0
        high, low = values["high"], values["low"]
        rules["high < low"] = high < low
        rules["open outside [low, high]"] = (values["open"] < low) | (values["open"] > high)
        rules["close outside [low, high]"] = (values["close"] < low) | (values["close"] > high)
        bad = np.logical_or.reduce(list(rules.values()))
        in_window = (
            ~time_null
            & (micros_int >= pd.Timestamp(WINDOW_START).value // 1000)
            & (micros_int < pd.Timestamp(WINDOW_END).value // 1000)
        )
        no_month = time_null | out_of_range
        keep = in_window | no_month
        good = raw.loc[
            keep & ~bad,
            ["symbol", "open_time", *PANDAS_PRICES, "volume", "source_rank", "line"],
        ]
        quarantine = raw.loc[keep & bad].copy()
        if len(quarantine):  # reason text only for the (few) bad rows
            index = np.flatnonzero(keep & bad)
            quarantine["reason"] = ["; ".join(text for text, mask in rules.items() if mask[i]) for i in index]
        del raw

    with steps("sort"):
        good = good.sort_values(["symbol", "open_time", "source_rank", "line"], ignore_index=True)
    with steps("dedupe"):
        before = len(good)
        good = good.loc[~good.duplicated(["symbol", "open_time"], keep="first"), MINUTE_COLUMNS]
        duplicates = before - len(good)
    with steps("parquet write per (symbol, month)"):
        files, minute_rows = _pd_write_months(good, lake, "minute_raw", "open_time")
        if len(quarantine):
            dated = quarantine.loc[in_window[keep & bad]]  # rows without a usable time belong to no month
            _pd_write_months(dated, lake, "quarantine", "open_time")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "rows": rows_read,
        "rows_per_s": rows_read / seconds,
        "minute_rows": minute_rows,
        "duplicates_removed": duplicates,
        "quarantined": len(quarantine),
        "files": files,
        "steps": steps.seconds,
    }


def stage_pandas_daily_raw(args) -> dict:

    lake = pandas_lake_dir(args.workdir)
    shutil.rmtree(lake / "daily_raw", ignore_errors=True)
    steps = Steps()
    rss_before = max_rss_mb()
    t0 = time.perf_counter()
    with steps("read minute parquet"):
        minutes = _pd_read_dataset(lake, "minute_raw")
    with steps("sort"):
        minutes = minutes.sort_values(["symbol", "open_time"], ignore_index=True)
    with steps("groupby daily aggregation"):
        minutes["date"] = minutes["open_time"].dt.tz_localize(None).dt.normalize()
        daily = minutes.groupby(["symbol", "date"], sort=True).agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            minute_count=("open", "size"),
        )
        daily = daily.reset_index()
        daily["minute_count"] = daily["minute_count"].astype("uint32")
    del minutes
    with steps("parquet write"):
        out = daily.assign(date=_dates_to_python(daily["date"]))
        files, _ = _pd_write_months(out, lake, "daily_raw", "date")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "rows": len(daily),
        "files": files,
        "steps": steps.seconds,
    }


def stage_pandas_daily_filled(args) -> dict:
    import pandas as pd

    lake = pandas_lake_dir(args.workdir)
    shutil.rmtree(lake / "daily_filled", ignore_errors=True)
    last_day = pd.Timestamp(WINDOW_END.date()) - pd.Timedelta(days=1)
    steps = Steps()
    rss_before = max_rss_mb()
    t0 = time.perf_counter()
    with steps("read daily parquet"):
        daily = _pd_read_dataset(lake, "daily_raw")
        daily["date"] = pd.to_datetime(daily["date"])
    frames = []
    with steps("calendar reindex + ffill"):
        for symbol, rows in daily.groupby("symbol", sort=True):
            rows = rows.set_index("date").sort_index()
            calendar = pd.date_range(rows.index.min(), min(rows.index.max(), last_day), freq="D", name="date")
            rows = rows.reindex(calendar)
            rows["symbol"] = symbol
            rows["is_filled"] = rows["close"].isna()
            rows["close"] = rows["close"].ffill()
            for column in ("open", "high", "low"):
                rows[column] = rows[column].fillna(rows["close"])
            rows["volume"] = rows["volume"].fillna(0.0)
            rows["minute_count"] = rows["minute_count"].fillna(0).astype("uint32")
            frames.append(rows)
    with steps("rolling MA7/MA30"):
        for rows in frames:
            rows["ma7"] = rows["close"].rolling(7, min_periods=7).mean()
            rows["ma30"] = rows["close"].rolling(30, min_periods=30).mean()
        filled = pd.concat(frames).reset_index()
        filled = filled[
            [
                "symbol",
                "date",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "minute_count",
                "is_filled",
                "ma7",
                "ma30",
            ]
        ]
    with steps("parquet write"):
        files, _ = _pd_write_months(
            filled.assign(date=_dates_to_python(filled["date"])),
            lake,
            "daily_filled",
            "date",
        )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "rows": len(filled),
        "files": files,
        "steps": steps.seconds,
    }


def stage_pandas_prophet_input(args) -> dict:
    import pandas as pd

    lake = pandas_lake_dir(args.workdir)
    shutil.rmtree(lake / "prophet_input", ignore_errors=True)
    steps = Steps()
    rss_before = max_rss_mb()
    t0 = time.perf_counter()
    with steps("read filled parquet"):
        filled = _pd_read_dataset(lake, "daily_filled")
    with steps("sort + select"):
        frame = filled.sort_values(["symbol", "date"], ignore_index=True)
        frame = pd.DataFrame({"ds": frame["date"], "y": frame["close"], "symbol": frame["symbol"]})
    with steps("parquet write"):
        files, _ = _pd_write_months(frame, lake, "prophet_input", "ds")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "rows": len(frame),
        "files": files,
        "steps": steps.seconds,
    }


# --------------------------------------------------------------------------------------------------------------
# Verification: both implementations must produce the same data
# --------------------------------------------------------------------------------------------------------------


def stage_verify(args) -> dict:
    import polars as pl

    polars_lake, pandas_lake = lake_dir(args.workdir), pandas_lake_dir(args.workdir)
    t0 = time.perf_counter()
    out: dict[str, object] = {}

    def scan(lake: Path, dataset: str) -> pl.LazyFrame:
        files = sorted((lake / dataset).glob("symbol=*/year=*/month=*/part-0.parquet"))
        return pl.scan_parquet(files)

    def same(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> str:
        if a.columns != b.columns:
            return f"columns differ: {a.columns} vs {b.columns}"
        if a.height != b.height:
            return f"rows differ: {a.height} vs {b.height}"
        a, b = a.sort(keys), b.sort(keys)
        problems = []
        for column in a.columns:
            x, y = a[column], b[column]
            if x.dtype != y.dtype:
                problems.append(f"{column}: {x.dtype} vs {y.dtype}")
            elif x.dtype == pl.Float64:
                diff = ((x - y).abs() > 1e-9 * y.abs().clip(lower_bound=1.0)) | (x.is_null() != y.is_null())
                if diff.any():
                    problems.append(f"{column}: {int(diff.sum())} values differ")
            elif not x.equals(y):
                problems.append(f"{column}: values differ")
        return "identical" if not problems else "; ".join(problems)

    summary = [
        pl.len().alias("rows"),
        pl.col("open_time").dt.epoch("s").sum().alias("t"),
        pl.col("close").sum(),
    ]
    a = scan(polars_lake, "minute_raw").group_by("symbol").agg(summary).sort("symbol").collect()
    b = scan(pandas_lake, "minute_raw").group_by("symbol").agg(summary).sort("symbol").collect()
    out["minute_raw"] = same(a, b, ["symbol"])
    out["minute_raw_files"] = (
        f"{len(list((polars_lake / 'minute_raw').rglob('*.parquet')))} vs "
        f"{len(list((pandas_lake / 'minute_raw').rglob('*.parquet')))}"
    )
    for dataset, keys in (
        ("daily_raw", ["symbol", "date"]),
        ("daily_filled", ["symbol", "date"]),
        ("prophet_input", ["symbol", "ds"]),
    ):
        out[dataset] = same(
            scan(polars_lake, dataset).collect(),
            scan(pandas_lake, dataset).collect(),
            keys,
        )
    out["seconds"] = time.perf_counter() - t0
    return out


def run_child(args, stage: str, rep: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop(BASELINE_ENV, None)
    if stage == "ingest_baseline":
        env[BASELINE_ENV] = str(args.baseline)
        env["PYTHONPATH"] = str(args.baseline)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage,
        "--scale",
        args.scale,
        "--workdir",
        str(args.workdir),
    ]
    if args.dagster_tmp:
        command += ["--dagster-tmp", str(args.dagster_tmp)]
    return run_stage_process(command, env, args.workdir / "logs" / f"{stage}-{rep}.log", args.timeout, stage)


def run_stage_process(command: list[str], env: dict[str, str], log: Path, timeout: float, label: str) -> dict:
    """Run one stage's process, keep its output in ``log`` and return the JSON it printed after RESULT_MARKER."""
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-25:])
        raise SystemExit(f"stage {label} failed (exit {done.returncode}); log: {log}\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARKER) :])


def summarize(runs: list[dict]) -> dict:
    """Median seconds (and the step medians) over the repetitions; RSS is the worst repetition's peak."""
    seconds = [r["seconds"] for r in runs]
    out = dict(runs[len(runs) // 2])  # the non-timing fields of one run
    out["seconds"] = statistics.median(seconds)
    out["seconds_all"] = seconds
    out["repeats"] = len(runs)
    out["maxrss_mb"] = max(r["maxrss_mb"] for r in runs)
    if "rows_per_s" in out:
        out["rows_per_s"] = out["rows"] / out["seconds"]
    if all("cpu_s" in r for r in runs):
        out["cpu_all"] = [r["cpu_s"] for r in runs]
        out["cpu_s"] = statistics.median(out["cpu_all"])
    if all("steps" in r for r in runs):
        names = list(runs[0]["steps"])
        out["steps"] = {n: statistics.median(r["steps"].get(n, 0.0) for r in runs) for n in names}
    return out


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table, also readable as plain text."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [
            line(headers),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *map(line, rows),
        ]
    )


def yes_no(ok: bool) -> str:
    return "yes" if ok else "NO"


def report(args, results: dict[str, dict]) -> str:
    r = results
    out: list[str] = []
    gen = r.get("generate")
    if gen:
        out.append(
            f"Input: {gen['rows']:,} CSV rows in {len(gen['files'])} Kaggle-style files ({gen['bytes'] / 1e6:,.0f} MB), "
            f"scale={args.scale}, {'cached' if gen['cached'] else 'generated in {:.1f} s'.format(gen['seconds'])}. "
            f"Window {WINDOW_START:%Y-%m-%d} .. {WINDOW_END:%Y-%m-%d} (exclusive)."
        )
    out.append(
        f"Median of {args.repeat} fresh processes for fast stages, {args.repeat_slow} for slow ones; peak RSS = "
        "ru_maxrss of the stage's own process (worst repetition), including the interpreter and imports."
    )

    # 1. Stage table: polars next to pandas
    def stage_row(label: str, name: str) -> list[str]:
        s = r.get(name)
        if not s:
            return [label, "-", "-", "-", "-", "-"]
        spread = f"{min(s['seconds_all']):.2f}-{max(s['seconds_all']):.2f}" if s["repeats"] > 1 else "-"
        rate = f"{s['rows_per_s'] / 1e6:.2f} M" if "rows_per_s" in s else "-"
        return [
            label,
            fmt_s(s["seconds"]),
            spread,
            str(s["repeats"]),
            fmt_mb(s["maxrss_mb"]),
            rate,
        ]

    headers = ["stage", "median s", "min-max s", "runs", "peak RSS MB", "rows/s"]
    rows = []
    rows.append(stage_row("floor   bare read_csv + one LZ4 write per symbol", "floor"))
    for name, label in (
        ("ingest", "ingest CSV -> minute_raw"),
        ("ingest_one", "ingest one file into the history"),
        ("minute_gaps", "minute_gaps (gap report)"),
        ("daily_raw", "daily_raw (daily aggregation)"),
        ("daily_filled", "daily_filled"),
        ("prophet_input", "prophet_input"),
    ):
        rows.append(stage_row(f"polars  {label}", name))
    direct = [r[n]["seconds"] for n in DIRECT_STAGES if n in r]
    direct_total = sum(direct) if len(direct) == len(DIRECT_STAGES) else None
    rows.append(["polars  direct total", fmt_s(direct_total), "", "", "", ""])
    if "dagster" in r:
        rows.append(stage_row("dagster single-run backfill, stock SQLite instance", "dagster"))
    if "dagster_postgres" in r:
        rows.append(stage_row("dagster  same, PostgreSQL instance", "dagster_postgres"))
    for name, label in (
        ("pandas_ingest", "ingest CSV -> minute_raw"),
        ("pandas_daily_raw", "daily_raw"),
        ("pandas_daily_filled", "daily_filled"),
        ("pandas_prophet_input", "prophet_input"),
    ):
        rows.append(stage_row(f"pandas  {label}", name))
    pandas = [
        r[n]["seconds"]
        for n in (
            "pandas_ingest",
            "pandas_daily_raw",
            "pandas_daily_filled",
            "pandas_prophet_input",
        )
        if n in r
    ]
    if len(pandas) == 4:
        rows.append(["pandas  total", fmt_s(sum(pandas)), "", "", "", ""])
    out += ["", "## Stages", "", table(headers, rows)]

    # 2. Ingest next to the read+write floor, round by round (a round's two processes ran back to back)
    if "ingest" in r and "floor" in r:
        i, f = r["ingest"], r["floor"]
        rounds = list(
            zip(
                f["seconds_all"],
                i["seconds_all"],
                f.get("cpu_all", []) or [None] * f["repeats"],
                i.get("cpu_all", []) or [None] * i["repeats"],
                strict=False,
            )
        )
        base = r.get("ingest_baseline")
        floor_rows = []
        for n, (fs, is_, fc, ic) in enumerate(rounds, 1):
            cpu = f"{fc:.2f} / {ic:.2f} = {ic / fc:.2f}x" if fc and ic else "-"
            row = [str(n), fmt_s(fs), fmt_s(is_), f"{is_ / fs:.2f}x", cpu]
            if base:
                bs, bc = base["seconds_all"][n - 1], base["cpu_all"][n - 1]
                row += [fmt_s(bs), f"{bs / fs:.2f}x", f"{bc:.2f} = {bc / fc:.2f}x"]
            floor_rows.append(row)
        ratio = statistics.median(b / a for a, b, _, _ in rounds)
        floor_rows.append(
            ["median", fmt_s(f["seconds"]), fmt_s(i["seconds"]), f"{ratio:.2f}x", ""]
            + (
                [
                    fmt_s(base["seconds"]),
                    f"{statistics.median(b / a for a, b in zip(f['seconds_all'], base['seconds_all'], strict=False)):.2f}x",
                    "",
                ]
                if base
                else []
            )
        )
        headers = ["round", "floor s", "ingest s", "ingest / floor", "CPU s floor / ingest"]
        if base:
            headers += ["baseline ingest s", "baseline / floor", "baseline CPU s"]
        out += [
            "",
            "## Ingest vs the read+write floor (same rounds)",
            "",
            "floor = bare `polars.read_csv` of the same CSVs + one LZ4 parquet write per symbol (no validation, "
            "no months, no fsync); ingest = `ingest_window` into an empty lake.",
            "",
            table(headers, floor_rows),
            "",
            f"Peak RSS: floor {fmt_mb(f['maxrss_mb'])} MB, ingest {fmt_mb(i['maxrss_mb'])} MB"
            + (f", baseline ingest ({args.baseline}) {fmt_mb(base['maxrss_mb'])} MB." if base else "."),
        ]
    if "ingest_one" in r:
        o = r["ingest_one"]
        spread = f" (runs {min(o['seconds_all']):.2f}-{max(o['seconds_all']):.2f} s)" if o["repeats"] > 1 else ""
        out += [
            "",
            "## One-file ingest into the whole history",
            "",
            f"`ingest_files` of one {o['rows']:,}-row CSV (BTCUSDT {o['span'][0]} .. {o['span'][1]}) into the lake of "
            f"{o['minute_files_in_lake']} minute_raw files: {o['seconds']:.2f} s{spread}, peak RSS "
            f"{fmt_mb(o['maxrss_mb'])} MB; minute_raw files rewritten: {', '.join(o['minute_files_touched']) or 'none'}.",
        ]

    # 3. Steps side by side
    pairs = [
        ("ingest", "pandas_ingest"),
        ("daily_raw", "pandas_daily_raw"),
        ("daily_filled", "pandas_daily_filled"),
        ("prophet_input", "pandas_prophet_input"),
    ]
    step_rows = []
    for pl_name, pd_name in pairs:
        a, b = r.get(pl_name, {}).get("steps", {}), r.get(pd_name, {}).get("steps", {})
        if not a and not b:
            continue
        la, lb = list(a.items()), list(b.items())
        for i in range(max(len(la), len(lb))):
            left = la[i] if i < len(la) else ("", None)
            right = lb[i] if i < len(lb) else ("", None)
            step_rows.append(
                [
                    pl_name if i == 0 else "",
                    left[0],
                    fmt_s(left[1]) if left[0] else "",
                    right[0],
                    fmt_s(right[1]) if right[0] else "",
                ]
            )
        step_rows.append(
            [
                "",
                "= total",
                fmt_s(r.get(pl_name, {}).get("seconds")),
                "= total",
                fmt_s(r.get(pd_name, {}).get("seconds")),
            ]
        )
    if step_rows:
        out += [
            "",
            "## Steps (medians), Polars library vs plain pandas",
            "",
            table(["stage", "polars step", "s", "pandas step", "s"], step_rows),
        ]

    # 4. Dagster
    if "dagster" in r:
        d = r["dagster"]
        failed = {k: v for k, v in d["checks"].items() if v != "passed"}
        out += [
            "",
            "## Dagster run",
            "",
            f"Partition range {d['partition_range'][0]} .. {d['partition_range'][1]} as {d['runs']} run(s), "
            f"success={d['success']}; {len(d['checks'])} asset checks, "
            f"{len(d['checks']) - len(failed)} passed"
            + (f", not passed: {', '.join(f'{k} {v}' for k, v in sorted(failed.items()))}" if failed else "")
            + f". {d['events']:,} events in the event log; instance at {d['instance_dir']}"
            + f". Import + build_definitions before the run: {d['setup_seconds']:.2f} s (not counted).",
            "",
        ]
        dag_rows = []
        for name in ("minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input"):
            direct_name = "ingest" if name == "minute_raw" else name
            step = d["steps"].get(name)
            base = r.get(direct_name, {}).get("seconds")
            ratio = f"{step / base:.2f}x" if step and base else "-"
            dag_rows.append([name, fmt_s(step), fmt_s(base), ratio])
        overhead = d["seconds"] - sum(d["steps"].values())
        dag_rows.append(["(run overhead outside steps)", fmt_s(overhead), "", ""])
        ratio = f"{d['seconds'] / direct_total:.2f}x" if direct_total else "-"
        dag_rows.append(["whole run", fmt_s(d["seconds"]), fmt_s(direct_total), ratio])
        out.append(table(["asset step", "dagster s", "direct s", "ratio"], dag_rows))
        postgres = r.get("dagster_postgres")
        if postgres and direct_total:
            out += [
                "",
                f"The same run on Dagster's PostgreSQL storage (success={postgres['success']}): "
                f"{postgres['seconds']:.1f} s, {postgres['seconds'] / direct_total:.2f}x the direct transforms; "
                f"stock SQLite {d['seconds']:.1f} s, {d['seconds'] / direct_total:.2f}x.",
            ]

    # 5. Targets
    target_rows = []
    if "ingest" in r:
        i = r["ingest"]
        target_rows.append(
            [
                "ingest rows/s",
                f"{i['rows_per_s'] / 1e6:.2f} M",
                ">= 2.00 M",
                yes_no(i["rows_per_s"] >= TARGET_INGEST_ROWS_PER_S),
            ]
        )
        target_rows.append(
            [
                "ingest peak RSS",
                f"{i['maxrss_mb']:,.0f} MB",
                f"< {TARGET_INGEST_RSS_MB:,} MB",
                yes_no(i["maxrss_mb"] < TARGET_INGEST_RSS_MB),
            ]
        )
        if "floor" in r:
            ratio = statistics.median(b / a for a, b in zip(r["floor"]["seconds_all"], i["seconds_all"], strict=False))
            target_rows.append(
                [
                    "ingest / read+write floor (median of rounds)",
                    f"{ratio:.2f}x",
                    f"<= {TARGET_FLOOR_RATIO:.1f}x",
                    yes_no(ratio <= TARGET_FLOOR_RATIO),
                ]
            )
    if "daily_raw" in r:
        s = r["daily_raw"]["seconds"]
        target_rows.append(
            [
                "daily aggregation of the whole history (build_daily_raw)",
                f"{s:.2f} s",
                f"< {TARGET_DAILY_AGG_S:.1f} s",
                yes_no(s < TARGET_DAILY_AGG_S),
            ]
        )
    if "dagster" in r and direct_total:
        ratio = r["dagster"]["seconds"] / direct_total
        measured = f"{ratio:.2f}x ({r['dagster']['seconds']:.1f} s / {direct_total:.1f} s)"
        target_rows.append(
            [
                "dagster run (stock SQLite) / direct transforms",
                measured,
                f"< {TARGET_DAGSTER_RATIO}x",
                yes_no(ratio < TARGET_DAGSTER_RATIO and r["dagster"]["success"]),
            ]
        )
    if "dagster_postgres" in r and direct_total:
        ratio = r["dagster_postgres"]["seconds"] / direct_total
        measured = f"{ratio:.2f}x ({r['dagster_postgres']['seconds']:.1f} s / {direct_total:.1f} s)"
        target_rows.append(
            [
                "dagster run (PostgreSQL) / direct transforms",
                measured,
                f"< {TARGET_DAGSTER_RATIO}x",
                yes_no(ratio < TARGET_DAGSTER_RATIO and r["dagster_postgres"]["success"]),
            ]
        )
    if target_rows:
        out += [
            "",
            "## Targets",
            "",
            table(["metric", "measured", "target", "met"], target_rows),
        ]

    if "verify" in r:
        v = r["verify"]
        out += ["", "## Polars vs pandas output", ""]
        out += [
            f"- {k}: {v[k]}"
            for k in (
                "minute_raw",
                "minute_raw_files",
                "daily_raw",
                "daily_filled",
                "prophet_input",
            )
        ]
    return "\n".join(out)


def run_all(args) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    stages = args.stages or DEFAULT_STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s): {', '.join(unknown)}; known: {', '.join(STAGES)}")
    if args.baseline is None:
        stages = [s for s in stages if s != "ingest_baseline"]
    elif not (args.baseline / "crypto_assets" / "batch" / "minute_ingest.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: not a checkout of this project")
    order = [s for s in STAGES if s in stages]  # dependency order
    if "generate" not in order:
        order.insert(0, "generate")  # cheap when cached, and every stage needs the files
    print(
        f"batch benchmark: scale={args.scale}, workdir={args.workdir}, python={sys.executable}",
        flush=True,
    )
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    repeats = {
        stage: 1 if STAGES[stage][0] == "setup" else (args.repeat_slow if STAGES[stage][0] == "slow" else args.repeat)
        for stage in order
    }
    runs: dict[str, list[dict]] = {stage: [] for stage in order}
    # Round robin: repetition r of every stage before repetition r + 1 of any, so a noisy minute on a shared
    # machine falls on the direct stages and the Dagster run alike instead of on one side of the comparison.
    for rep in range(max(repeats.values())):
        for stage in order:
            if rep >= repeats[stage]:
                continue
            res = run_child(args, stage, rep)
            runs[stage].append(res)
            print(
                f"  {stage:<24} run {rep + 1}/{repeats[stage]}: {res['seconds']:7.2f} s  peak RSS {res['maxrss_mb']:7,.0f} MB",
                flush=True,
            )
    for stage in order:
        results[stage] = summarize(runs[stage]) if STAGES[stage][0] != "setup" else runs[stage][0]
    text = report(args, results)
    elapsed = time.perf_counter() - t_all
    print("\n" + text + f"\n\nbenchmark wall time: {elapsed:.0f} s", flush=True)
    stamp = {
        "scale": args.scale,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": elapsed,
        "cpus": os.cpu_count(),
        "results": results,
    }
    # A --stages subset never overwrites the results of a complete run.
    name = f"results-{args.scale}" + ("-partial" if args.stages else "")
    save_results(args.workdir, name, text, stamp)
    return 0


def save_results(workdir: Path, name: str, text: str, stamp: dict) -> None:
    """A run's report as ``<name>.md`` and its figures as ``<name>.json`` under ``workdir``."""
    (workdir / f"{name}.json").write_text(json.dumps(stamp, indent=2, default=str) + "\n")
    (workdir / f"{name}.md").write_text(text + "\n")
    print(f"wrote {workdir / name}.md and .json", flush=True)


def print_stage_result(result: dict) -> int:
    """A stage process's result, with its peak RSS, as the one JSON line :func:`run_stage_process` reads."""
    result["maxrss_mb"] = max_rss_mb()
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


def run_stage(args) -> int:
    """Child mode: run one stage in this fresh process and print its result as one JSON line."""
    return print_stage_result(globals()[f"stage_{args.stage}"](args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["full", "small", "tiny"], default="full")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "bench" / "out",
        help="data, lakes, logs and results (default bench/out, git-ignored)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="fresh-process repetitions of fast stages (median)",
    )
    parser.add_argument(
        "--repeat-slow",
        type=int,
        default=1,
        help="repetitions of the slow stages: ingest, pandas_ingest, dagster (default 1)",
    )
    parser.add_argument(
        "--stages",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help=f"comma-separated subset, run in dependency order; known: {', '.join(STAGES)}",
    )
    parser.add_argument(
        "--dagster-tmp",
        type=Path,
        help="put the Dagster instance (SQLite storage) in a fresh directory under this parent, "
        "e.g. /dev/shm, instead of <workdir>/dagster/instance",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier revision (e.g. `git worktree add /tmp/base main`): its ingest "
        "runs in the same rounds as this one's (stage ingest_baseline)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per stage process")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
    if args.repeat < 1 or args.repeat_slow < 1:
        parser.error("--repeat and --repeat-slow must be at least 1")
    return run_stage(args) if args.stage else run_all(args)


if __name__ == "__main__":
    sys.exit(main())
