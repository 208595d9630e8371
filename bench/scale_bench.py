#!/usr/bin/env python
"""Benchmark of the batch graph's cost against its work: more symbols, the same months, Polars and Spark.

One invocation runs the batch graph (minute_raw -> minute_gaps -> exchange_backfill (off) -> daily_raw ->
daily_filled -> prophet_input) as ONE single-run backfill over the same months for each number of synthetic
symbols (SYM001USDT, ...), on each engine (``[spark] engine``: Polars in the run's process, or a Spark session
on ``--master``, ``local[2]`` by default), with Dagster's stock SQLite instance in a fresh directory each time,
and prints side by side: seconds, rows in ``minute_raw``, seconds per million rows (overall and marginal, from
one size to the next), peak memory, and the size of the largest month for comparison. Forecasts are left out:
their cost is per symbol, not per row, and ``forecast_bench.py`` measures it.

1. ``generate``: one Kaggle-style CSV per symbol over the window (``synthetic.generate_minutes`` of the symbol's
   series, cut to the window's whole months), cached under ``<workdir>/data-<window>``;
2. ``run`` (per engine and size): the batch graph through ``crypto_assets.batch.runs.materialize_batch_range``
   with ``[[sources]]`` the first N files, ``[[symbols]]`` starting at the window, exchange backfill off;
3. ``inspect``: minute_raw's rows and bytes per month from the parquet footers, and the largest month read
   back into memory (Polars ``estimated_size``).

Each stage runs in its own fresh process (this script re-invoked with ``--stage``). Memory of a run: the
driver is ``getrusage(RUSAGE_SELF).ru_maxrss`` of the run's process (Dagster runs every step in it); the
Spark JVM (a child of that process) and Spark's Python workers (children of the JVM) are not in it, and
``RUSAGE_CHILDREN`` would count only processes already reaped (the JVM lives until the run's process exits),
so their peaks are the ``VmHWM`` of each process read from /proc, polled every 0.2 s and once more after the
run; ``tree`` is the largest sampled sum of ``VmRSS`` over the run's process and all its descendants.

The lake is local disk only: the S3-compatible column says so instead of holding a figure.

    PYTHONPATH=. python bench/scale_bench.py                  # 1, 10, 50 symbols x 2 years, both engines
    PYTHONPATH=. python bench/scale_bench.py --scale small    # 1, 2, 4 symbols x 2 months, a smoke test
    PYTHONPATH=. python bench/scale_bench.py --spark-max-symbols 10   # time-box: Spark up to 10 symbols
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
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
S3_COLUMN = "n/a: the lake is local-only"
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


def run_dir(args, engine: str, count: int) -> Path:
    return args.workdir / "runs" / f"{engine}-{count}"


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


def stage_run(args) -> dict:
    import crypto_assets

    start, end = window(args.months)
    with TreeMemory() as tree:
        result = dagster_batch_run(
            run_dir(args, args.engine, args.count),
            run_config(args, args.engine, args.count),
            months=(month_key(start), month_key(end, back=1)),
        )
    assert len(result["symbols"]) == args.count, result["symbols"]
    return result | tree.summary() | {"library": str(Path(crypto_assets.__file__).resolve().parent)}


def stage_inspect(args) -> dict:
    import polars as pl
    import pyarrow.parquet as pq

    lake = run_dir(args, args.engine, args.count) / "project" / "lake"
    files = sorted((lake / "minute_raw").glob("symbol=*/year=*/month=*/*.parquet"))
    per_file: dict[str, tuple[int, int]] = {}
    months: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        key = str(path.relative_to(lake / "minute_raw"))
        per_file[key] = (pq.read_metadata(path).num_rows, path.stat().st_size)
        months["/".join(path.parts[-3:-1])].append(path)
    rows = sum(r for r, _ in per_file.values())
    month_rows = {m: sum(per_file[str(p.relative_to(lake / "minute_raw"))][0] for p in ps) for m, ps in months.items()}
    out: dict = {"seconds": 0.0, "rows": rows, "files": len(files), "bytes": sum(b for _, b in per_file.values())}
    if month_rows:  # a failed run may leave no month written
        largest = max(month_rows, key=month_rows.__getitem__)
        in_memory = pl.read_parquet(months[largest]).estimated_size() / 2**20
        biggest_file = max(per_file, key=lambda k: per_file[k][0])
        out |= {
            "months": len(months),
            "largest_month": largest,
            "largest_month_rows": month_rows[largest],
            "largest_month_disk_mb": sum(p.stat().st_size for p in months[largest]) / 2**20,
            "largest_month_memory_mb": in_memory,
            # The whole range held at once, at the largest month's bytes per row.
            "history_memory_mb": in_memory * rows / month_rows[largest],
            "largest_file": biggest_file,
            "largest_file_rows": per_file[biggest_file][0],
        }
    out |= {
        "per_file_rows": {k: r for k, (r, _) in per_file.items()},
        "datasets": {
            d: len(list((lake / d).glob("symbol=*/year=*/month=*/*.parquet")))
            for d in ("daily_raw", "daily_filled", "prophet_input")
        },
    }
    if not args.keep_lakes:
        shutil.rmtree(run_dir(args, args.engine, args.count), ignore_errors=True)
    return out


STAGES = {"generate": stage_generate, "run": stage_run, "inspect": stage_inspect}


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------


def log_path(args, stage: str, engine: str, count: int) -> Path:
    return args.workdir / "logs" / f"{stage}-{engine}-{count}.log"


def run_child(args, stage: str, engine: str = "-", count: int = 0) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage,
        "--engine",
        engine,
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
        command, env, log_path(args, stage, engine, count), args.timeout, f"{stage} {engine} {count}"
    )


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def report(args, results: list[dict], generated: dict) -> str:
    start, end = window(args.months)
    out = [
        f"Window {start:%Y-%m-%d} .. {end:%Y-%m-%d} (exclusive), {args.months} months; synthetic CSVs: "
        f"{generated['files']} files, {generated['bytes'] / 1e6:,.0f} MB ({generated['generated']} generated now). "
        f"Spark master {args.master}, driver memory {args.driver_memory}; Dagster stock SQLite instance. "
        "One run per cell.",
        "",
    ]
    rows = []
    previous: dict[str, dict] = {}
    for r in results:
        run, lake = r["run"], r["inspect"]
        ok = run["success"]
        prev = previous.get(r["engine"])
        marginal = (
            (run["seconds"] - prev["run"]["seconds"]) / ((lake["rows"] - prev["inspect"]["rows"]) / 1e6)
            if ok and prev and lake["rows"] > prev["inspect"]["rows"]
            else None
        )
        if ok:
            previous[r["engine"]] = r
        largest = (
            f"{lake['largest_month_rows']:,} / {lake['largest_month_memory_mb']:,.0f}"
            if "largest_month" in lake
            else "-"
        )
        rows.append(
            [
                r["engine"],
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
                S3_COLUMN,
            ]
        )
    headers = [
        "engine",
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
        "S3-compatible",
    ]
    out += ["## Cost against work (local disk)", "", table(headers, rows), ""]
    out.append(
        "marginal = extra seconds per extra million rows from the previous size on the same engine; driver = "
        "ru_maxrss of the run's process; JVM and Spark worker = the largest VmHWM of those processes (polled from "
        "/proc); tree = the largest sampled sum of VmRSS over the run's process and its descendants; range in "
        "memory = minute_raw's rows at the largest month's in-memory bytes per row."
    )

    step_rows = []
    for r in results:
        run = r["run"]
        steps = [run["steps"].get(s) for s in STEPS]
        overhead = run["seconds"] - sum(s for s in steps if s)
        step_rows.append([r["engine"], str(r["count"]), *(fmt(s) for s in steps), fmt(overhead)])
    out += ["", "## Steps (seconds)", "", table(["engine", "symbols", *STEPS, "outside steps"], step_rows)]

    notes = []
    for r in results:
        run, lake = r["run"], r["inspect"]
        failed = sorted(k for k, v in run["checks"].items() if v != "passed")
        largest = (
            f", largest month {lake['largest_month']} {lake['largest_month_disk_mb']:,.1f} MB on disk, largest file "
            f"{lake['largest_file']} ({lake['largest_file_rows']:,} rows)"
            if "largest_month" in lake
            else ""
        )
        errors = "".join(f"; step {step} failed: {text}" for step, text in run.get("failures", {}).items())
        notes.append(
            f"- {r['engine']} {r['count']}: success={run['success']}{errors}; {len(run['checks'])} checks, not "
            f"passed: {', '.join(failed) or 'none'}; {lake['files']} minute_raw files ({lake['bytes'] / 2**20:,.0f} "
            f"MB on disk){largest}; driver {run['rss_before_mb']:,.0f} MB before the run; load average "
            f"{r['load'][0]:.1f} -> {r['load'][1]:.1f}; log {r['log']}."
        )
    by_count: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in results:
        by_count[r["count"]][r["engine"]] = r["inspect"]
    for count, lakes in sorted(by_count.items()):
        if len(lakes) == 2:
            same = lakes["polars"]["per_file_rows"] == lakes["spark"]["per_file_rows"]
            same &= lakes["polars"]["datasets"] == lakes["spark"]["datasets"]
            notes.append(
                f"- {count} symbol(s): minute_raw rows per file and daily file counts, polars vs spark: "
                f"{'identical' if same else 'DIFFERENT'}."
            )
    skipped = [n for n in args.symbols if "spark" in args.engines and n > args.spark_max_symbols]
    if skipped:
        notes.append(f"- spark not run for {', '.join(map(str, skipped))} symbols (--spark-max-symbols).")
    out += ["", "## Runs", "", *notes]
    return "\n".join(out)


def run_all(args) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    start, end = window(args.months)
    print(
        f"scale benchmark: symbols={','.join(map(str, args.symbols))}, window {start:%Y-%m} .. {end:%Y-%m} "
        f"(exclusive), engines={','.join(args.engines)}, workdir={args.workdir}",
        flush=True,
    )
    t_all = time.perf_counter()
    generated = run_child(args, "generate")
    print(f"  generate: {generated['files']} CSVs ready in {generated['seconds']:.1f} s", flush=True)
    results = []
    for count in args.symbols:
        for engine in args.engines:
            if engine == "spark" and count > args.spark_max_symbols:
                continue
            load0 = os.getloadavg()[0]
            run = run_child(args, "run", engine, count)
            load1 = os.getloadavg()[0]
            lake = run_child(args, "inspect", engine, count)
            log = str(log_path(args, "run", engine, count))
            results.append(
                {"engine": engine, "count": count, "run": run, "inspect": lake, "load": [load0, load1], "log": log}
            )
            print(
                f"  {engine:<6} {count:>3} symbols: {run['seconds']:7.1f} s, {lake['rows']:,} rows, "
                f"driver {run['maxrss_mb']:,.0f} MB, tree {run['tree_rss_mb']:,.0f} MB, success={run['success']}",
                flush=True,
            )
    text = report(args, results, generated)
    elapsed = time.perf_counter() - t_all
    print("\n" + text + f"\n\nbenchmark wall time: {elapsed:.0f} s", flush=True)
    name = "results-small" if args.months == SMALL["months"] else "results"
    stamp = {"finished": datetime.now(UTC).isoformat(timespec="seconds"), "wall_s": elapsed, "results": results}
    save_results(args.workdir, name, text, stamp)
    return 0


def run_stage(args) -> int:
    return print_stage_result(STAGES[args.stage](args))


def counts(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["full", "small"], default="full", help="small: 1,2,4 symbols x 2 months")
    parser.add_argument("--symbols", type=counts, help="comma-separated numbers of symbols (default 1,10,50)")
    parser.add_argument("--years", type=int, default=2, help="years of minutes per symbol (default 2)")
    parser.add_argument("--months", type=int, help="months of minutes per symbol (overrides --years)")
    parser.add_argument(
        "--engines",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(ENGINES),
        help="comma-separated: polars, spark",
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
    parser.add_argument("--keep-lakes", action="store_true", help="keep each run's lake (removed after inspection)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per stage process")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--engine", default="-", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    small = args.scale == "small"
    args.symbols = args.symbols or (SMALL["symbols"] if small else [1, 10, 50])
    args.months = args.months or (SMALL["months"] if small else 12 * args.years)
    args.workdir = args.workdir.resolve()
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown or not args.symbols or min(args.symbols) < 1 or args.months < 1:
        parser.error(f"engines from {', '.join(ENGINES)}; symbols and months at least 1")
    return run_stage(args) if args.stage else run_all(args)


if __name__ == "__main__":
    sys.exit(main())
