#!/usr/bin/env python
"""Benchmark of the batch graph's cost against its work: more symbols, the same months, Polars and Spark, the
lake on local disk and on an S3-compatible server.

One invocation runs the batch graph (minute_raw -> minute_gaps -> exchange_backfill (off) -> daily_raw ->
daily_filled -> prophet_input) as ONE single-run backfill over the same months for each number of synthetic
symbols (SYM001USDT, ...), on each engine (``[spark] engine``: Polars in the run's process, or a Spark session
on ``--master``, ``local[2]`` by default) and each storage (``--storage``: ``local``, the lake in the run's
project home; ``s3``, the lake at ``s3://<bucket>/lake`` on moto's standalone server), with Dagster's stock
SQLite instance in a fresh directory each time, and prints side by side: seconds, rows in ``minute_raw``,
seconds per million rows (overall and marginal, from one size to the next on the same engine and storage), peak
memory, and the size of the largest month for comparison. Forecasts are left out: their cost is per symbol, not
per row, and ``forecast_bench.py`` measures it.

The S3-compatible server is ONE moto server (``crypto_assets_tests.s3``) started by this script for the whole
invocation on a free port of 127.0.0.1 and stopped at the end; each s3 run gets a fresh bucket, and its run and
inspect processes get the AWS_* variables (endpoint, fake keys, region) and ``CRYPTO_ASSETS_LAKE=s3://<bucket>/lake``
in their environment. The bucket is emptied and removed after inspection (unless ``--keep-lakes``; moto loses
it anyway when it stops). moto keeps the objects in its own process, a child of this script, not of the run: its
memory is not in the run's peaks; its own peak RSS (``VmHWM``) is printed as a note.

1. ``generate``: one Kaggle-style CSV per symbol over the window (``synthetic.generate_minutes`` of the symbol's
   series, cut to the window's whole months), cached under ``<workdir>/data-<window>``;
2. ``run`` (per engine and size): the batch graph through ``crypto_assets.batch_runs.materialize_batch_range``
   with ``[[sources]]`` the first N files, ``[[symbols]]`` starting at the window, exchange backfill off;
3. ``inspect``: minute_raw's rows and bytes per month from the parquet footers, and the largest month read
   back into memory (Polars ``estimated_size``). The s3 lake is inspected itself, not the local one's figures
   reused: its objects are listed with s3fs, each footer read through an s3fs file, and the largest month read
   by Polars from its ``s3://`` URLs.

Each stage runs in its own fresh process (this script re-invoked with ``--stage``). Memory of a run: the
driver is ``getrusage(RUSAGE_SELF).ru_maxrss`` of the run's process (Dagster runs every step in it); the
Spark JVM (a child of that process) and Spark's Python workers (children of the JVM) are not in it, and
``RUSAGE_CHILDREN`` would count only processes already reaped (the JVM lives until the run's process exits),
so their peaks are the ``VmHWM`` of each process read from /proc, polled every 0.2 s and once more after the
run; ``tree`` is the largest sampled sum of ``VmRSS`` over the run's process and all its descendants.

    PYTHONPATH=. python bench/scale_bench.py                  # 1, 10, 50 symbols x 2 years, both engines, both storages
    PYTHONPATH=. python bench/scale_bench.py --scale small    # 1, 2, 4 symbols x 2 months, a smoke test
    PYTHONPATH=. python bench/scale_bench.py --spark-max-symbols 10   # time-box: Spark up to 10 symbols
    PYTHONPATH=. python bench/scale_bench.py --engines polars --storage s3 --symbols 1,10
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import shutil
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from batch_bench import (  # noqa: E402  (this folder is on sys.path when the script runs)
    dagster_batch_run,
    print_stage_result,
    run_stage_process,
    save_results,
    table,
)

ENGINES = ("polars", "spark")
STORAGES = ("local", "s3")
LAKE_ENV = "CRYPTO_ASSETS_LAKE"
PARTITION_GLOB = "symbol=*/year=*/month=*/*.parquet"
SMALL = {"symbols": [1, 2, 4], "months": 2}
STEPS = ("minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input")


# --------------------------------------------------------------------------------------------------------------
# The window and its data
# --------------------------------------------------------------------------------------------------------------


def window(months: int) -> tuple[datetime, datetime]:
    """``months`` whole months ending where the synthetic market's data end (its last whole month)."""
    from crypto_assets.batch import synthetic

    data_end = max(s.end for s in synthetic.market_series("full"))
    end = datetime(data_end.year, data_end.month, 1, tzinfo=UTC)
    k = end.year * 12 + end.month - 1 - months
    return datetime(k // 12, k % 12 + 1, 1, tzinfo=UTC), end


def month_key(moment: datetime, back: int = 0) -> str:
    """The Dagster partition key of the month ``back`` months before ``moment``'s."""
    k = moment.year * 12 + moment.month - 1 - back
    return f"{k // 12:04d}-{k % 12 + 1:02d}-01"


def market(args, count: int) -> list:
    """The first ``count`` symbols of the synthetic market, over the window."""
    from crypto_assets.batch import synthetic

    start, end = window(args.months)
    return [replace(s, start=start, end=end) for s in synthetic.market_series("full", count, args.seed)]


def data_dir(args) -> Path:
    from crypto_assets.batch.synthetic import GENERATOR_VERSION

    start, end = window(args.months)
    return args.workdir / f"data-{start:%Y-%m}-{end:%Y-%m}-seed{args.seed}-v{GENERATOR_VERSION}"


def csv_path(args, symbol: str) -> Path:
    return data_dir(args) / f"{symbol}_kaggle_1m.csv"


def run_dir(args, engine: str, storage: str, count: int) -> Path:
    """The run's project home and instance (and, for ``local``, its lake)."""
    return args.workdir / "runs" / f"{engine}-{storage}-{count}"


# --------------------------------------------------------------------------------------------------------------
# Memory of a process tree
# --------------------------------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, object] | None:
    """Name, VmRSS and VmHWM (MB) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: dict[str, object] = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Name":
            out["Name"] = value.strip()
        elif key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _descendants(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of every descendant of ``root``, parents before their children."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces and parentheses: the fields after its last ')' are state, ppid.
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    out, stack = [], [root]
    while stack:
        parent = stack.pop()
        for child in children.get(parent, []):
            out.append((child, parent))
            stack.append(child)
    return out


class TreeMemory:
    """Peaks of this process's descendants (VmHWM of each) and of the whole tree's summed VmRSS, polled. The
    Spark JVM is the ``java`` child; Spark's Python workers are the JVM's descendants (other children, such as
    Dagster's log capture, are counted in the tree only)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[int, tuple[str, float]] = {}  # pid -> (role, VmHWM MB)
        self.tree_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # the JVM is still alive: its VmHWM now is its peak over the run

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        own = _status(os.getpid()) or {}
        total = float(own.get("VmRSS", 0.0))
        roles: dict[int, str] = {}
        for pid, parent in _descendants(os.getpid()):
            status = _status(pid)
            if status is None:
                continue
            total += float(status["VmRSS"])
            if status.get("Name") == "java":
                roles[pid] = "jvm"
            else:
                roles[pid] = "worker" if roles.get(parent) in ("jvm", "worker") else "other"
            old = self.peaks.get(pid, ("", 0.0))[1]
            self.peaks[pid] = (roles[pid], max(old, float(status["VmHWM"])))
        self.tree_mb = max(self.tree_mb, total)

    def summary(self) -> dict:
        jvm = [mb for role, mb in self.peaks.values() if role == "jvm"]
        workers = [mb for role, mb in self.peaks.values() if role == "worker"]
        return {
            "jvm_rss_mb": max(jvm, default=None),
            "jvms": len(jvm),
            "worker_rss_mb": max(workers, default=None),
            "workers": len(workers),
            "tree_rss_mb": self.tree_mb,
            "others": sum(role == "other" for role, _ in self.peaks.values()),
        }


# --------------------------------------------------------------------------------------------------------------
# Stages (each in its own process)
# --------------------------------------------------------------------------------------------------------------


def stage_generate(args) -> dict:
    from crypto_assets.batch.synthetic import generate_minutes, write_kaggle_csv

    out = data_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    generated = 0
    for series in market(args, max(args.symbols)):
        path = csv_path(args, series.symbol)
        if not path.is_file():  # written atomically: a file that exists is whole
            write_kaggle_csv(generate_minutes(series, args.seed), path)
            generated += 1
    files = [csv_path(args, s.symbol) for s in market(args, max(args.symbols))]
    return {
        "seconds": time.perf_counter() - t0,
        "generated": generated,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }


def run_config(args, engine: str, count: int) -> str:
    start, _ = window(args.months)
    lines: list[str] = []
    series = market(args, count)
    for s in series:
        lines += ["[[symbols]]", f'name = "{s.symbol}"', f"start = {start:%Y-%m-%d}", ""]
    for s in series:
        lines += ["[[sources]]", f'path = "{csv_path(args, s.symbol)}"', f'symbol = "{s.symbol}"', ""]
    lines += ["[exchange]", "backfill = false", ""]
    lines += ["[spark]", f'engine = "{engine}"', f'master = "{args.master}"', f'driver_memory = "{args.driver_memory}"']
    return "\n".join(lines) + "\n"


def expected_lake(args) -> str:
    """Where the run's lake must be: in its project home, or the ``s3://`` URL this process was given."""
    if args.run_storage == "s3":
        return os.environ[LAKE_ENV]
    return str(run_dir(args, args.engine, args.run_storage, args.count) / "project" / "lake")


def stage_run(args) -> dict:
    import crypto_assets

    start, end = window(args.months)
    with TreeMemory() as tree:
        result = dagster_batch_run(
            run_dir(args, args.engine, args.run_storage, args.count),
            run_config(args, args.engine, args.count),
            months=(month_key(start), month_key(end, back=1)),
        )
    assert len(result["symbols"]) == args.count, result["symbols"]
    assert result["lake"] == expected_lake(args), (result["lake"], expected_lake(args))
    return result | tree.summary() | {"library": str(Path(crypto_assets.__file__).resolve().parent)}


def s3_filesystem():
    """s3fs on the AWS_* variables of this process (the endpoint from AWS_ENDPOINT_URL), listings never cached."""
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False)


class LakeFiles:
    """The partitioned parquet files of a lake, local or ``s3://``: listed with sizes, footers read, URLs for
    Polars."""

    def __init__(self, lake: str) -> None:
        self.lake = lake.rstrip("/")
        self.remote = lake.startswith("s3://")
        self.fs = s3_filesystem() if self.remote else None

    def files(self, dataset: str) -> dict[str, tuple[str, int]]:
        """``symbol=/year=/month=/file`` -> (location for pyarrow and Polars, bytes), sorted by key."""
        if not self.remote:
            root = Path(self.lake) / dataset
            return {str(p.relative_to(root)): (str(p), p.stat().st_size) for p in sorted(root.glob(PARTITION_GLOB))}
        prefix = f"{self.lake.removeprefix('s3://')}/{dataset}"
        if not self.fs.exists(prefix):
            return {}
        out = {}
        for key, info in self.fs.find(prefix, detail=True).items():
            relative = key.removeprefix(prefix + "/")
            if relative.count("/") == 3 and fnmatch.fnmatchcase(relative, PARTITION_GLOB):
                out[relative] = (f"s3://{key}", int(info["size"]))
        return dict(sorted(out.items()))

    def num_rows(self, location: str) -> int:
        import pyarrow.parquet as pq

        if not self.remote:
            return pq.read_metadata(location).num_rows
        with self.fs.open(location, "rb") as handle:  # the footer's bytes only: ranged GETs
            return pq.read_metadata(handle).num_rows

    def local_leftovers(self, home: Path) -> bool:
        """For an s3 lake: whether anything of it landed on local disk (the project home's ``lake`` folder)."""
        return self.remote and (home / "project" / "lake").exists()

    def remove(self) -> None:
        """An s3 lake's objects and its bucket (moto frees them); a local lake goes with its run folder."""
        if self.remote:
            bucket = self.lake.removeprefix("s3://").split("/", 1)[0]
            self.fs.rm(bucket, recursive=True)


def stage_inspect(args) -> dict:
    import polars as pl

    t0 = time.perf_counter()
    home = run_dir(args, args.engine, args.run_storage, args.count)
    lake = LakeFiles(expected_lake(args))
    listing = lake.files("minute_raw")
    per_file: dict[str, tuple[int, int]] = {k: (lake.num_rows(loc), size) for k, (loc, size) in listing.items()}
    months: dict[str, list[str]] = defaultdict(list)
    for key in per_file:
        months["/".join(key.split("/")[-3:-1])].append(key)
    rows = sum(r for r, _ in per_file.values())
    month_rows = {m: sum(per_file[k][0] for k in keys) for m, keys in months.items()}
    out: dict = {
        "seconds": 0.0,
        "lake": lake.lake,
        "rows": rows,
        "files": len(per_file),
        "bytes": sum(b for _, b in per_file.values()),
    }
    if month_rows:  # a failed run may leave no month written
        largest = max(month_rows, key=month_rows.__getitem__)
        in_memory = pl.read_parquet([listing[k][0] for k in months[largest]]).estimated_size() / 2**20
        biggest_file = max(per_file, key=lambda k: per_file[k][0])
        out |= {
            "months": len(months),
            "largest_month": largest,
            "largest_month_rows": month_rows[largest],
            "largest_month_disk_mb": sum(per_file[k][1] for k in months[largest]) / 2**20,
            "largest_month_memory_mb": in_memory,
            # The whole range held at once, at the largest month's bytes per row.
            "history_memory_mb": in_memory * rows / month_rows[largest],
            "largest_file": biggest_file,
            "largest_file_rows": per_file[biggest_file][0],
        }
    out |= {
        "per_file_rows": {k: r for k, (r, _) in per_file.items()},
        "per_file_bytes": {k: b for k, (_, b) in per_file.items()},
        "datasets": {d: len(lake.files(d)) for d in ("daily_raw", "daily_filled", "prophet_input")},
        "local_leftovers": lake.local_leftovers(home),
        "inspect_seconds": time.perf_counter() - t0,
    }
    if not args.keep_lakes:
        lake.remove()
        shutil.rmtree(home, ignore_errors=True)
    return out


STAGES = {"generate": stage_generate, "run": stage_run, "inspect": stage_inspect}


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------


def log_path(args, stage: str, engine: str, storage: str, count: int) -> Path:
    return args.workdir / "logs" / f"{stage}-{engine}-{storage}-{count}.log"


class S3Server:
    """ONE moto server for the whole invocation (a child of this process, not of the runs), a fresh bucket per
    run, and moto's own peak RSS read from /proc."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.endpoint = ""
        self.pid: int | None = None
        self.buckets = 0

    def __enter__(self) -> S3Server:
        from crypto_assets_tests.s3 import s3_server

        self.endpoint = self._stack.enter_context(s3_server())
        port = self.endpoint.rsplit(":", 1)[1]
        for pid, _ in _descendants(os.getpid()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"moto.server" in argv and port.encode() in argv:
                self.pid = pid
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def memory(self) -> dict[str, float | None]:
        """moto's current and peak RSS in MB (None if it could not be found)."""
        status = _status(self.pid) if self.pid else None
        if status is None:
            return {"moto_rss_mb": None, "moto_peak_mb": None}
        return {"moto_rss_mb": float(status["VmRSS"]), "moto_peak_mb": float(status["VmHWM"])}

    def environment(self, engine: str, count: int) -> dict[str, str]:
        """The AWS_* variables and a lake in a fresh bucket for one run (and its inspection)."""
        from crypto_assets_tests.s3 import aws_environment, make_bucket

        self.buckets += 1
        bucket = f"scale-{engine}-{count}-{self.buckets}-{uuid.uuid4().hex[:8]}"
        make_bucket(self.endpoint, bucket)
        return aws_environment(self.endpoint) | {LAKE_ENV: f"s3://{bucket}/lake"}


def run_child(
    args,
    stage: str,
    engine: str = "-",
    storage: str = "local",
    count: int = 0,
    extra_env: dict[str, str] | None = None,
) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop(LAKE_ENV, None)  # a local run's lake is in its project home whatever this shell says
    env.update(extra_env or {})
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage,
        "--engine",
        engine,
        "--run-storage",
        storage,
        "--count",
        str(count),
        "--symbols",
        ",".join(map(str, args.symbols)),
        "--months",
        str(args.months),
        "--seed",
        str(args.seed),
        "--master",
        args.master,
        "--driver-memory",
        args.driver_memory,
        "--workdir",
        str(args.workdir),
    ]
    if args.keep_lakes:
        command.append("--keep-lakes")
    return run_stage_process(
        command, env, log_path(args, stage, engine, storage, count), args.timeout, f"{stage} {engine} {storage} {count}"
    )


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def order(r: dict) -> tuple:
    return (ENGINES.index(r["engine"]), STORAGES.index(r["storage"]), r["count"])


def report(args, results: list[dict], generated: dict, server: dict | None) -> str:
    start, end = window(args.months)
    out = [
        f"Window {start:%Y-%m-%d} .. {end:%Y-%m-%d} (exclusive), {args.months} months; synthetic CSVs: "
        f"{generated['files']} files, {generated['bytes'] / 1e6:,.0f} MB ({generated['generated']} generated now). "
        f"Spark master {args.master}, driver memory {args.driver_memory}; Dagster stock SQLite instance; storage "
        f"{', '.join(args.storage)}"
        + (" (s3 = moto's standalone server on 127.0.0.1, a fresh bucket per run)" if "s3" in args.storage else "")
        + ". One run per cell.",
        "",
    ]
    results = sorted(results, key=order)
    rows = []
    previous: dict[tuple[str, str], dict] = {}
    for r in results:
        run, lake = r["run"], r["inspect"]
        ok = run["success"]
        prev = previous.get((r["engine"], r["storage"]))
        marginal = (
            (run["seconds"] - prev["run"]["seconds"]) / ((lake["rows"] - prev["inspect"]["rows"]) / 1e6)
            if ok and prev and lake["rows"] > prev["inspect"]["rows"]
            else None
        )
        if ok:
            previous[(r["engine"], r["storage"])] = r
        largest = (
            f"{lake['largest_month_rows']:,} / {lake['largest_month_memory_mb']:,.0f}"
            if "largest_month" in lake
            else "-"
        )
        rows.append(
            [
                r["engine"],
                r["storage"],
                str(r["count"]),
                f"{lake['rows']:,}",
                fmt(run["seconds"], 1) if ok else f"FAILED after {run['seconds']:.1f}",
                fmt(run["seconds"] / (lake["rows"] / 1e6)) if ok and lake["rows"] else "-",
                fmt(marginal),
                fmt(run["maxrss_mb"], 0),
                fmt(run["jvm_rss_mb"], 0),
                fmt(run["worker_rss_mb"], 0),
                fmt(run["tree_rss_mb"], 0),
                largest,
                fmt(lake.get("history_memory_mb"), 0),
            ]
        )
    headers = [
        "engine",
        "storage",
        "symbols",
        "minute_raw rows",
        "run s",
        "s / M rows",
        "marginal s / M rows",
        "driver peak MB",
        "JVM peak MB",
        "Spark worker peak MB",
        "tree peak MB",
        "largest month rows / MB in memory",
        "range in memory MB",
    ]
    out += ["## Cost against work", "", table(headers, rows), ""]
    out.append(
        "marginal = extra seconds per extra million rows from the previous size on the same engine and storage; "
        "driver = ru_maxrss of the run's process; JVM and Spark worker = the largest VmHWM of those processes "
        "(polled from /proc); tree = the largest sampled sum of VmRSS over the run's process and its descendants "
        "(the moto server is not one of them); range in memory = minute_raw's rows at the largest month's "
        "in-memory bytes per row."
    )

    step_rows = []
    for r in results:
        run = r["run"]
        steps = [run["steps"].get(s) for s in STEPS]
        overhead = run["seconds"] - sum(s for s in steps if s)
        step_rows.append([r["engine"], r["storage"], str(r["count"]), *(fmt(s) for s in steps), fmt(overhead)])
    out += ["", "## Steps (seconds)", "", table(["engine", "storage", "symbols", *STEPS, "outside steps"], step_rows)]

    notes = []
    for r in results:
        run, lake = r["run"], r["inspect"]
        failed = sorted(k for k, v in run["checks"].items() if v != "passed")
        largest = (
            f", largest month {lake['largest_month']} {lake['largest_month_disk_mb']:,.1f} MB stored, largest file "
            f"{lake['largest_file']} ({lake['largest_file_rows']:,} rows)"
            if "largest_month" in lake
            else ""
        )
        errors = "".join(f"; step {step} failed: {text}" for step, text in run.get("failures", {}).items())
        moto = (
            f"; moto RSS after the run {r['moto_rss_mb']:,.0f} MB (its peak so far {r['moto_peak_mb']:,.0f} MB)"
            if r.get("moto_peak_mb") is not None
            else ""
        )
        leftovers = "; a local lake folder was ALSO written" if lake.get("local_leftovers") else ""
        notes.append(
            f"- {r['engine']} {r['storage']} {r['count']}: success={run['success']}{errors}; lake {lake['lake']}; "
            f"{len(run['checks'])} checks, not passed: {', '.join(failed) or 'none'}; {lake['files']} minute_raw "
            f"files ({lake['bytes'] / 2**20:,.0f} MB stored){largest}{leftovers}; driver "
            f"{run['rss_before_mb']:,.0f} MB before the run{moto}; load average {r['load'][0]:.1f} -> "
            f"{r['load'][1]:.1f}; log {r['log']}."
        )
    by_count: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in results:
        if r["run"]["success"]:
            by_count[r["count"]][f"{r['engine']}/{r['storage']}"] = r["inspect"]
    for count, lakes in sorted(by_count.items()):
        if len(lakes) > 1:
            (first, base), *others = lakes.items()

            def same(x: dict, y: dict) -> bool:
                return x["per_file_rows"] == y["per_file_rows"] and x["datasets"] == y["datasets"]

            different = [name for name, lake in others if not same(base, lake)]
            sizes = [name for name, lake in others if lake["per_file_bytes"] != base["per_file_bytes"]]
            notes.append(
                f"- {count} symbol(s): minute_raw rows per file and daily file counts, {', '.join(lakes)}: "
                + (f"DIFFERENT from {first}: {', '.join(different)}" if different else "identical")
                + (f"; minute_raw bytes per file differ from {first}: {', '.join(sizes)}" if sizes else "")
                + "."
            )
    skipped = [n for n in args.symbols if "spark" in args.engines and n > args.spark_max_symbols]
    if skipped:
        notes.append(f"- spark not run for {', '.join(map(str, skipped))} symbols (--spark-max-symbols).")
    if server:
        notes.append(
            f"- moto server {server['endpoint']} (pid {server['pid']}): peak RSS {fmt(server['moto_peak_mb'], 0)} MB "
            f"over the invocation ({server['buckets']} bucket(s), each emptied and removed after its inspection"
            f"{' unless kept' if args.keep_lakes else ''}); not part of any run's peak above."
        )
    out += ["", "## Runs", "", *notes]
    return "\n".join(out)


def run_all(args) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    start, end = window(args.months)
    print(
        f"scale benchmark: symbols={','.join(map(str, args.symbols))}, window {start:%Y-%m} .. {end:%Y-%m} "
        f"(exclusive), engines={','.join(args.engines)}, storage={','.join(args.storage)}, workdir={args.workdir}",
        flush=True,
    )
    t_all = time.perf_counter()
    generated = run_child(args, "generate")
    print(f"  generate: {generated['files']} CSVs ready in {generated['seconds']:.1f} s", flush=True)
    results = []
    server_info = None
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(S3Server()) if "s3" in args.storage else None
        if server:
            print(f"  moto S3 server on {server.endpoint} (pid {server.pid})", flush=True)
        for count in args.symbols:
            for engine in args.engines:
                if engine == "spark" and count > args.spark_max_symbols:
                    continue
                for storage in args.storage:
                    env = server.environment(engine, count) if storage == "s3" else {}
                    load0 = os.getloadavg()[0]
                    run = run_child(args, "run", engine, storage, count, env)
                    load1 = os.getloadavg()[0]
                    moto = server.memory() if storage == "s3" else {}  # before inspection empties the bucket
                    lake = run_child(args, "inspect", engine, storage, count, env)
                    log = str(log_path(args, "run", engine, storage, count))
                    results.append(
                        {
                            "engine": engine,
                            "storage": storage,
                            "count": count,
                            "run": run,
                            "inspect": lake,
                            "load": [load0, load1],
                            "log": log,
                        }
                        | moto
                    )
                    print(
                        f"  {engine:<6} {storage:<5} {count:>3} symbols: {run['seconds']:7.1f} s, "
                        f"{lake['rows']:,} rows, driver {run['maxrss_mb']:,.0f} MB, tree {run['tree_rss_mb']:,.0f} MB, "
                        f"success={run['success']}",
                        flush=True,
                    )
        if server:
            server_info = {"endpoint": server.endpoint, "pid": server.pid, "buckets": server.buckets}
            server_info |= server.memory()
    text = report(args, results, generated, server_info)
    elapsed = time.perf_counter() - t_all
    print("\n" + text + f"\n\nbenchmark wall time: {elapsed:.0f} s", flush=True)
    name = "results-small" if args.months == SMALL["months"] else "results"
    stamp = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": elapsed,
        "storage": args.storage,
        "s3_server": server_info,
        "results": results,
    }
    save_results(args.workdir, name, text, stamp)
    return 0


def run_stage(args) -> int:
    return print_stage_result(STAGES[args.stage](args))


def counts(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def names(text: str) -> list[str]:
    """A comma list, each name once, in the order given."""
    return list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["full", "small"], default="full", help="small: 1,2,4 symbols x 2 months")
    parser.add_argument("--symbols", type=counts, help="comma-separated numbers of symbols (default 1,10,50)")
    parser.add_argument("--years", type=int, default=2, help="years of minutes per symbol (default 2)")
    parser.add_argument("--months", type=int, help="months of minutes per symbol (overrides --years)")
    parser.add_argument("--engines", type=names, default=list(ENGINES), help="comma-separated: polars, spark")
    parser.add_argument(
        "--storage",
        type=names,
        default=list(STORAGES),
        help="comma-separated: local (the lake on local disk), s3 (on moto's S3 server); default local,s3",
    )
    parser.add_argument("--spark-max-symbols", type=int, default=10**6, help="run Spark only up to this size")
    parser.add_argument("--master", default="local[2]", help="Spark master of the spark engine (default local[2])")
    parser.add_argument("--driver-memory", default="2g", help="[spark] driver_memory (default 2g, the project's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "bench" / "out" / "scale",
        help="data, lakes, logs and results (default bench/out/scale, git-ignored)",
    )
    parser.add_argument(
        "--keep-lakes",
        action="store_true",
        help="keep each run's lake (removed after inspection; an s3 lake is lost anyway when moto stops)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per stage process")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--engine", default="-", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--run-storage", choices=STORAGES, default="local", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    small = args.scale == "small"
    args.symbols = args.symbols or (SMALL["symbols"] if small else [1, 10, 50])
    args.months = args.months or (SMALL["months"] if small else 12 * args.years)
    args.workdir = args.workdir.resolve()
    unknown = [e for e in args.engines if e not in ENGINES] + [s for s in args.storage if s not in STORAGES]
    if unknown or not args.engines or not args.storage:
        parser.error(f"engines from {', '.join(ENGINES)}, storage from {', '.join(STORAGES)}; got {unknown}")
    if not args.symbols or min(args.symbols) < 1 or args.months < 1:
        parser.error("symbols and months at least 1")
    return run_stage(args) if args.stage else run_all(args)


if __name__ == "__main__":
    sys.exit(main())
