#!/usr/bin/env python
"""Benchmark of the batch engines side by side: Polars and Spark ``local[*]`` on the same minute_raw lake.

For each input (``real``: the six real Binance files beside the checkout; ``small`` / ``full``: the synthetic
history of ``crypto_assets.batch.synthetic``), one invocation:

1. ``prepare``: ingests the input once with the Polars ingest into ``<workdir>/<input>/minute_raw``;
2. ``polars``: runs ``build_daily_raw``, ``build_daily_filled`` and ``build_prophet_input`` of
   :mod:`crypto_assets.batch.pipeline` on the Polars engine, timing each step;
3. ``spark``: starts the engine's Spark session (timed on its own: JVM start-up) and runs the same three steps
   on the Spark engine twice in that process: ``cold`` is what one Dagster step process pays (first queries,
   JIT and code generation), ``warm`` what a long-lived session pays;
4. ``verify``: compares the two engines' daily_raw, daily_filled and prophet_input files byte for byte.

Each engine writes its own lake (minute_raw is shared through a symlink), and every measured stage runs in a
fresh subprocess (this script re-invoked with ``--stage``) that prints its figures as one JSON line. The
Polars and Spark stages are repeated ``--repeat`` times; the table shows medians.

    PYTHONPATH=. python bench/engine_bench.py                        # real data + synthetic small
    PYTHONPATH=. python bench/engine_bench.py --inputs real,full     # the whole synthetic history too
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SYMBOLS = ("BTCUSDT", "ETHUSDT")
RESULT_MARKER = "BENCH_RESULT "
REAL_DATA = REPO.parent / "shared" / "data" / "binance_spot_1m"
# (window start, window end) per input; the window covers the input's whole history.
WINDOWS = {
    "real": (datetime(2021, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)),
    "small": (datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    "full": (datetime(2012, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
}
STEPS = ("daily_raw", "daily_filled", "prophet_input")  # also the datasets they write


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def input_dir(args, name: str) -> Path:
    return args.workdir / name


def lake(args, name: str, engine: str) -> Path:
    return input_dir(args, name) / f"lake-{engine}"


# --------------------------------------------------------------------------------------------------------------
# Stages (run in a child process)
# --------------------------------------------------------------------------------------------------------------


def stage_prepare(args) -> dict:
    from crypto_assets.batch import synthetic
    from crypto_assets.batch.minute_ingest import ingest_window
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    if args.input == "real":
        source_dir = REAL_DATA
    else:
        source_dir = args.synthetic_dir / f"data-{args.input}"
        synthetic.generate_dataset(source_dir, scale=args.input, seed=42)
    root = input_dir(args, args.input)
    shutil.rmtree(root, ignore_errors=True)
    sources, problems = discover_sources([SourceSpec(str(source_dir))], list(SYMBOLS))
    assert sources and not problems, problems
    start, end = WINDOWS[args.input]
    t0 = time.perf_counter()
    result = ingest_window(sources, root / "minute_lake", list(SYMBOLS), start, end)
    seconds = time.perf_counter() - t0
    for engine in ("polars", "spark"):
        lake(args, args.input, engine).mkdir(parents=True)
        (lake(args, args.input, engine) / "minute_raw").symlink_to(root / "minute_lake" / "minute_raw")
    return {"seconds": seconds, "minute_rows": result.minute.rows, "files": len(result.minute.files)}


def run_steps(lake_dir: Path, window, engine) -> dict[str, float]:
    from crypto_assets.batch import pipeline

    out = {}
    for step in STEPS:
        t0 = time.perf_counter()
        getattr(pipeline, f"build_{step}")(lake_dir, list(SYMBOLS), *window, engine)
        out[step] = time.perf_counter() - t0
    return out


def stage_polars(args) -> dict:
    from crypto_assets.batch.pipeline import POLARS

    steps = run_steps(lake(args, args.input, "polars"), WINDOWS[args.input], POLARS)
    return {"seconds": sum(steps.values()), "steps": steps}


def jvm_peak_rss_mb(session) -> float | None:
    """Peak RSS of the Spark driver JVM (a child process of this one), from /proc."""
    try:
        pid = session.sparkContext._gateway.proc.pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (AttributeError, OSError, ValueError):
        return None
    return None


def stage_spark(args) -> dict:
    from crypto_assets.settings import DEFAULT_SYMBOLS, Settings, SparkSettings
    from crypto_assets.spark.engine import SparkEngine
    from crypto_assets_tests.spark.session import start_session

    settings = Settings(home=args.workdir, symbols=DEFAULT_SYMBOLS, spark=SparkSettings(master=args.master))
    t0 = time.perf_counter()
    session = start_session(settings)
    startup = time.perf_counter() - t0
    engine = SparkEngine(session)
    lake_dir, window = lake(args, args.input, "spark"), WINDOWS[args.input]
    cold = run_steps(lake_dir, window, engine)
    warm = run_steps(lake_dir, window, engine)
    result = {
        "seconds": startup + sum(cold.values()),
        "startup": startup,
        "steps": cold,
        "warm": warm,
        "jvm_rss_mb": jvm_peak_rss_mb(session),
        "master": session.sparkContext.master,
        "parallelism": session.sparkContext.defaultParallelism,
    }
    session.stop()
    return result


def stage_verify(args) -> dict:
    out = {}
    for dataset in STEPS:
        digests = []
        for engine in ("polars", "spark"):
            root = lake(args, args.input, engine) / dataset
            files = sorted(root.rglob("*.parquet"))
            digests.append({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
        same = digests[0] == digests[1] and bool(digests[0])
        out[dataset] = f"{'identical' if same else 'DIFFERENT'} ({len(digests[0])} vs {len(digests[1])} files)"
    return {"seconds": 0.0, "datasets": out}


STAGES = {"prepare": stage_prepare, "polars": stage_polars, "spark": stage_spark, "verify": stage_verify}


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------


def run_child(args, stage: str, name: str, rep: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage,
        "--input",
        name,
        "--workdir",
        str(args.workdir),
        "--synthetic-dir",
        str(args.synthetic_dir),
        "--master",
        args.master,
    ]
    log = args.workdir / "logs" / f"{name}-{stage}-{rep}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-25:])
        raise SystemExit(f"stage {stage} ({name}) failed (exit {done.returncode}); log: {log}\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARKER) :])


def median(runs: list[dict], *path: str) -> float | None:
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.2f}{unit}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def report(name: str, prepared: dict, polars: list[dict], spark: list[dict], verify: dict) -> str:
    start, end = WINDOWS[name]
    first = spark[0]
    heading = (
        f"## Input `{name}`: {prepared['minute_rows']:,} minute rows in {prepared['files']} minute_raw files, "
        f"window {start:%Y-%m-%d} .. {end:%Y-%m-%d} (exclusive)"
    )
    setup = (
        f"Spark master {first['master']} (default parallelism {first['parallelism']}); medians of {len(polars)} "
        "fresh processes per engine. Spark cold = the first run in a new session (what a Dagster step process "
        "pays), warm = the same steps again in that session."
    )
    out = [heading, "", setup, ""]
    rows = [["Spark session start-up", "-", fmt(median(spark, "startup")), "-", "-"]]
    for step in STEPS:
        p, c, w = median(polars, "steps", step), median(spark, "steps", step), median(spark, "warm", step)
        rows.append([step, fmt(p), fmt(c), fmt(w), f"{w / p:.1f}x" if p and w else "-"])
    p_total = median(polars, "seconds")
    warm_total = statistics.median(sum(r["warm"].values()) for r in spark)
    cold_steps = statistics.median(sum(r["steps"].values()) for r in spark)
    rows.append(["steps total", fmt(p_total), fmt(cold_steps), fmt(warm_total), f"{warm_total / p_total:.1f}x"])
    rows.append(["total incl. start-up", fmt(p_total), fmt(median(spark, "seconds")), "-", "-"])
    out.append(table(["step", "polars s", "spark cold s", "spark warm s", "warm / polars"], rows))
    memory = (
        f"Peak RSS: polars process {fmt(median(polars, 'maxrss_mb'))} MB; spark Python process "
        f"{fmt(median(spark, 'maxrss_mb'))} MB + driver JVM {fmt(median(spark, 'jvm_rss_mb'))} MB."
    )
    outputs = "Outputs, polars vs spark: " + "; ".join(f"{k} {v}" for k, v in verify["datasets"].items()) + "."
    out += ["", memory, outputs]
    return "\n".join(out)


def run_all(args) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"engine benchmark: inputs={','.join(args.inputs)}, workdir={args.workdir}, cpus={os.cpu_count()}", flush=True
    )
    t_all = time.perf_counter()
    sections, results = [], {}
    for name in args.inputs:
        prepared = run_child(args, "prepare", name, 0)
        print(
            f"  {name:<6} prepare: {prepared['minute_rows']:,} minute rows in {prepared['seconds']:.1f} s", flush=True
        )
        runs: dict[str, list[dict]] = {"polars": [], "spark": []}
        for rep in range(args.repeat):
            for engine in ("polars", "spark"):  # interleaved, so a busy spell hits both engines alike
                res = run_child(args, engine, name, rep)
                runs[engine].append(res)
                print(f"  {name:<6} {engine:<6} run {rep + 1}/{args.repeat}: {res['seconds']:7.2f} s", flush=True)
        verify = run_child(args, "verify", name, 0)
        results[name] = {"prepare": prepared, **runs, "verify": verify}
        sections.append(report(name, prepared, runs["polars"], runs["spark"], verify))
    text = "\n\n".join(sections)
    elapsed = time.perf_counter() - t_all
    print("\n" + text + f"\n\nbenchmark wall time: {elapsed:.0f} s", flush=True)
    stamp = {"finished": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(), "results": results}
    (args.workdir / "results.json").write_text(json.dumps(stamp, indent=2, default=str) + "\n")
    (args.workdir / "results.md").write_text(text + "\n")
    print(f"wrote {args.workdir / 'results.md'} and .json", flush=True)
    return 0


def run_stage(args) -> int:
    result = STAGES[args.stage](args)
    result["maxrss_mb"] = max_rss_mb()
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--inputs",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["real", "small"],
        help="comma-separated: real, small, full (default real,small)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "bench" / "out" / "engines",
        help="lakes, logs and results (default bench/out/engines, git-ignored)",
    )
    parser.add_argument(
        "--synthetic-dir",
        type=Path,
        default=REPO / "bench" / "out",
        help="where the synthetic CSVs are cached as data-<scale> (shared with batch_bench)",
    )
    parser.add_argument("--master", default="local[*]", help="Spark master for the spark engine")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per engine (median)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per stage process")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--input", choices=list(WINDOWS), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    args.workdir, args.synthetic_dir = args.workdir.resolve(), args.synthetic_dir.resolve()
    unknown = [name for name in args.inputs if name not in WINDOWS]
    if unknown or args.repeat < 1:
        parser.error(f"unknown input(s) {unknown}; known: {', '.join(WINDOWS)}; --repeat must be at least 1")
    return run_stage(args) if args.stage else run_all(args)


if __name__ == "__main__":
    sys.exit(main())
