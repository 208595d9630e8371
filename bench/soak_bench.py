#!/usr/bin/env python
"""A soak of the real ``crypto-assets up``: growth rates over a long run, and optionally chaos.

The script starts ``crypto-assets up`` in a fresh home (synthetic market, replay exchange, embedded broker,
Spark stream, Dagster code server, webserver and daemon) with short retention windows, so the steady state is
reached within the run, and every ``--sample-seconds`` records:

* each component's resident memory, open files and threads (its process and long-lived children; a run
  worker the daemon starts for one run is not counted as the daemon's);
* the disk used by each folder of the home (and the lake's speed and serving datasets apart);
* the Dagster run count and the sensors' and schedules' tick count, through the webserver's GraphQL API;
* the sensor's lag behind the newest micro-batch, and the latency of the ``unified_view`` asset page's query;
* whether ``unified_view`` matches the exchange's own candles (``crypto_assets_tests/serving/observe.py``).

At the end it prints each figure's slope per hour after ``--warmup-minutes`` (least squares), the targets
(no process grows more than 20 MB an hour; the home outside the lake's data stays within 5 MB; the asset page
at the end within 1.5x of the start), writes the samples as JSON and a plot as PNG.

``--chaos`` SIGKILLs each component in turn (broker, producer, stream, code server, daemon, webserver, reports
server), one every ``--chaos-every`` minutes after the warm-up, and reports per component how long ``up`` took
to restart it, how many minutes the view missed before the repair and how many seconds until the view matched
the exchange again.

    PYTHONPATH=. python bench/soak_bench.py                       # 60 minutes
    PYTHONPATH=. python bench/soak_bench.py --minutes 20 --warmup-minutes 5 --chaos --chaos-every 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crypto_assets.serving.processes import free_port, read_process_records
from crypto_assets_tests.serving.observe import (
    CHAOS_ORDER,
    Chaos,
    asset_page_seconds,
    chaos_round,
    check_view,
    component_footprints,
    disk_by_folder,
    run_and_tick_counts,
    sensor_lag_seconds,
    view_written_at,
)
from crypto_assets_tests.speed.harness import stop_process

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
RSS_TARGET_MB_PER_HOUR = 20.0
DISK_TARGET_MB = 5.0
LATENCY_TARGET_RATIO = 1.5


@dataclass
class Sample:
    minute: float
    footprints: dict[str, dict]
    disk: dict[str, int]
    runs: int | None
    ticks: int | None
    sensor_lag_s: float | None
    page_s: float | None
    view_whole: bool
    missing_minutes: int
    problems: list[str] = field(default_factory=list)


def shown(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.0f} {unit}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start_up(home: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, int, dict]:
    (home / "crypto_assets.toml").write_text(
        f'home = "{home}"\n[synthetic]\nscale = "{args.scale}"\n'
        f"[serving]\nsensor_min_interval_seconds = {args.sensor_interval}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CRYPTO_ASSETS_CONFIG": str(home / "crypto_assets.toml"),
        "DAGSTER_HOME": str(home / "dagster"),
        "CRYPTO_ASSETS_KAFKA_BROKER_PORT": str(free_port()),
        "CRYPTO_ASSETS_SERVING_REPORTS_PORT": str(free_port()),
        # Short windows, so that what bounds each kind of growth acts within the run.
        "CRYPTO_ASSETS_RUN_RETENTION": args.retention,
        "CRYPTO_ASSETS_LOGS_MAX_BYTES": str(args.log_max_bytes),
        "CRYPTO_ASSETS_LOGS_BACKUPS": str(args.log_backups),
        "CRYPTO_ASSETS_KAFKA_EMBEDDED_MAX_MB": str(args.broker_max_mb),
    }
    env.pop("CRYPTO_ASSETS_HOME", None)
    port = free_port()
    command = [sys.executable, "-m", "crypto_assets.cli", "--home", str(home), "up", "--port", str(port)]
    log = (home / "up.log").open("w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home), port, env


def ui_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str, up: subprocess.Popen, step: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"crypto-assets up exited with code {up.returncode} while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def rest_url(home: Path) -> str:
    return f"http://127.0.0.1:{read_process_records(home)['exchange-replay'].ports[0]}"


def take_sample(home: Path, port: int, began: float, since) -> Sample:
    def guarded(call):
        try:
            return call()
        except Exception as exc:  # a component being restarted; the sample records the gap
            print(f"    ({type(exc).__name__}: {str(exc)[:160]})", flush=True)
            return None

    counts = guarded(lambda: run_and_tick_counts(port)) or (None, None)
    check = guarded(lambda: check_view(rest_url(home), home / "lake", SYMBOLS, since))
    return Sample(
        minute=(time.monotonic() - began) / 60,
        footprints={name: asdict(f) for name, f in component_footprints(home).items()},
        disk=disk_by_folder(home),
        runs=counts[0],
        ticks=counts[1],
        sensor_lag_s=sensor_lag_seconds(home, view_written_at(home, SYMBOLS)),
        page_s=guarded(lambda: asset_page_seconds(port)),
        view_whole=bool(check and check.whole),
        missing_minutes=check.missing_minutes if check else 0,
        problems=check.problems if check else ["the view could not be checked"],
    )


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, value) points, per hour."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def series(samples: list[Sample]) -> dict[str, list[tuple[float, float]]]:
    """Every figure as (minute, value) points: rss/<component> (MB), files/…, threads/…, disk/<folder> (MB), …"""
    found: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, minute: float, value: float | None) -> None:
        if value is not None:
            found.setdefault(name, []).append((minute, value))

    for s in samples:
        for name, f in s.footprints.items():
            add(f"rss_mb/{name}", s.minute, f["rss_mb"])
            add(f"open_files/{name}", s.minute, f["open_files"])
            add(f"threads/{name}", s.minute, f["threads"])
        for folder, size in s.disk.items():
            add(f"disk_mb/{folder}", s.minute, size / 1e6)
        lake_data = (
            s.disk.get("lake", 0) - s.disk.get("lake/speed_microbatches", 0) - s.disk.get("lake/unified_view", 0)
        )
        outside = sum(v for k, v in s.disk.items() if "/" not in k) - lake_data
        add("disk_mb/home outside the lake's data", s.minute, outside / 1e6)
        add("runs", s.minute, s.runs)
        add("ticks", s.minute, s.ticks)
        add("sensor_lag_s", s.minute, s.sensor_lag_s)
        add("asset_page_s", s.minute, s.page_s)
    return found


def verdicts(samples: list[Sample], warmup: float) -> list[tuple[str, bool, str]]:
    steady = [s for s in samples if s.minute >= warmup]
    figures = series(steady)
    found = []
    for name, points in sorted(figures.items()):
        if name.startswith("rss_mb/") and name != "rss_mb/up":
            slope = slope_per_hour(points)
            if slope is not None:
                found.append(
                    (
                        f"{name} grows <= {RSS_TARGET_MB_PER_HOUR:.0f} MB/h",
                        slope <= RSS_TARGET_MB_PER_HOUR,
                        f"{slope:+.1f} MB/h",
                    )
                )
    outside = [v for _, v in figures.get("disk_mb/home outside the lake's data", [])]
    if outside:
        spread = max(outside) - min(outside)
        found.append(
            (
                f"home outside the lake's data within {DISK_TARGET_MB:.0f} MB",
                spread <= DISK_TARGET_MB,
                f"{spread:.1f} MB spread",
            )
        )
    pages = [v for _, v in figures.get("asset_page_s", [])]
    if len(pages) >= 6:
        first, last = statistics.median(pages[:3]), statistics.median(pages[-3:])
        ratio = last / first if first else float("inf")
        found.append(
            (
                f"asset page at the end within {LATENCY_TARGET_RATIO}x of the start",
                ratio <= LATENCY_TARGET_RATIO,
                f"{first * 1000:.0f} -> {last * 1000:.0f} ms ({ratio:.2f}x)",
            )
        )
    return found


def plot(samples: list[Sample], path: Path, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = series(samples)
    panels = [
        ("resident memory (MB)", "rss_mb/"),
        ("threads", "threads/"),
        ("open files", "open_files/"),
        ("disk (MB)", "disk_mb/"),
        ("runs and ticks", ("runs", "ticks")),
        ("sensor lag and asset page (s)", ("sensor_lag_s", "asset_page_s")),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(15, 12), sharex=True)
    for ax, (title, prefix) in zip(axes.flat, panels, strict=True):
        names = [n for n in figures if (n.startswith(prefix) if isinstance(prefix, str) else n in prefix)]
        for name in sorted(names):
            xs, ys = zip(*figures[name], strict=True)
            ax.plot(xs, ys, label=name.split("/", 1)[-1], linewidth=1.2)
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minutes since start (dotted: end of warm-up)")
    fig.suptitle("crypto-assets up: soak")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="wall time after the system is up")
    parser.add_argument("--warmup-minutes", type=float, default=15.0, help="left out of the slopes")
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--scale", default="tiny", choices=["tiny", "small"], help="the synthetic market's history")
    parser.add_argument("--sensor-interval", type=int, default=30)
    parser.add_argument("--retention", default="10m", help="run_retention for the soak (default 10m)")
    parser.add_argument("--log-max-bytes", type=int, default=100_000, help="small, so the logs reach their cap")
    parser.add_argument("--log-backups", type=int, default=1)
    parser.add_argument("--broker-max-mb", type=int, default=8, help="the embedded broker's topic rotation size")
    parser.add_argument("--chaos", action="store_true", help="SIGKILL each component in turn after the warm-up")
    parser.add_argument("--chaos-every", type=float, default=5.0, help="minutes between two kills")
    parser.add_argument("--repair-timeout", type=float, default=600.0, help="seconds a component gets to recover")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "soak")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="soak-", dir=args.workdir))
    print(f"soak of crypto-assets up for {args.minutes:.0f} min in {home}; load average {load_average()}", flush=True)

    began = time.monotonic()
    up, port, _ = start_up(home, args)
    samples: list[Sample] = []
    chaos: list[Chaos] = []
    try:
        wait_for(lambda: "dagster-daemon" in read_process_records(home) and ui_answers(port), 1200, "the UI", up)
        wait_for(lambda: view_written_at(home, SYMBOLS), 600, "the first unified_view", up)
        print(f"  up and serving after {time.monotonic() - began:.0f}s", flush=True)
        since = datetime.now(UTC).date()
        began = time.monotonic()
        pending = list(CHAOS_ORDER) if args.chaos else []
        next_kill = args.warmup_minutes
        while (minute := (time.monotonic() - began) / 60) < args.minutes:
            if up.poll() is not None:
                raise RuntimeError(f"crypto-assets up exited with code {up.returncode}")
            if pending and minute >= next_kill:
                name = pending.pop(0)
                print(f"  chaos: SIGKILL {name} at minute {minute:.1f}", flush=True)
                chaos.append(chaos_round(home, name, rest_url(home), SYMBOLS, since, args.repair_timeout))
                print(f"    {chaos[-1]}", flush=True)
                next_kill = (time.monotonic() - began) / 60 + args.chaos_every
            sample = take_sample(home, port, began, since)
            samples.append(sample)
            rss = sum(f["rss_mb"] for f in sample.footprints.values())
            print(
                f"  [{sample.minute:5.1f} min] rss {rss:7.0f} MB, home {sum(v for k, v in sample.disk.items() if '/' not in k) / 1e6:7.1f} MB, "
                f"runs {sample.runs}, ticks {sample.ticks}, lag {shown(sample.sensor_lag_s, 's')}, "
                f"page {shown(sample.page_s and sample.page_s * 1000, 'ms')}, "
                f"view {'whole' if sample.view_whole else 'NOT whole: ' + '; '.join(sample.problems)[:200]}",
                flush=True,
            )
            time.sleep(max(0.0, args.sample_seconds - ((time.monotonic() - began) / 60 - sample.minute) * 60))
    finally:
        stop_process(up, timeout=180)

    report(samples, chaos, args, home)
    return 0


def report(samples: list[Sample], chaos: list[Chaos], args: argparse.Namespace, home: Path) -> None:
    steady = [s for s in samples if s.minute >= args.warmup_minutes]
    figures = series(steady)
    print(
        f"\nslopes per hour after minute {args.warmup_minutes:.0f} ({len(steady)} samples); load average {load_average()}"
    )
    print(f"{'figure':<52}{'start':>12}{'end':>12}{'slope/h':>12}")
    for name, points in sorted(figures.items()):
        slope = slope_per_hour(points)
        print(
            f"{name:<52}{points[0][1]:>12.1f}{points[-1][1]:>12.1f}{(f'{slope:+.2f}' if slope is not None else 'n/a'):>12}"
        )
    print("\ntargets")
    for what, ok, figure in verdicts(samples, args.warmup_minutes):
        print(f"  {'PASS' if ok else 'FAIL'}  {what}: {figure}")
    whole = sum(s.view_whole for s in samples)
    print(f"  unified_view matched the exchange in {whole} of {len(samples)} samples")
    if chaos:
        print(f"\nchaos{'':<14}{'restart (s)':>14}{'missing min':>14}{'whole after (s)':>18}")
        for c in chaos:
            restart = f"{c.restart_s:.0f}" if c.restart_s is not None else "never"
            repaired = f"{c.whole_after_s:.0f}" if c.whole_after_s is not None else "never"
            print(f"  {c.component:<17}{restart:>14}{c.missing_minutes:>14}{repaired:>18}")
            if c.whole_after_s is None:
                print(f"    {'; '.join(c.problems)[:300]}")
    out = args.workdir / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "home": str(home),
                "samples": [asdict(s) for s in samples],
                "chaos": [asdict(c) for c in chaos],
            },
            indent=1,
        )
    )
    plot(samples, out.with_suffix(".png"), args.warmup_minutes)
    print(f"\nsamples: {out.with_suffix('.json')}\nplot: {out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
