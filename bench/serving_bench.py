#!/usr/bin/env python
"""Latency from a trade arriving at the replay exchange to its appearance in ``unified_view`` via the sensor.

For each sensor interval asked for, the script starts the whole system with ``crypto-assets up --skip-batch
--sensor-interval N`` in a fresh home (replay exchange, broker, producer, Spark stream, Dagster webserver and
daemon), then, for ``--window`` seconds:

* listens to the exchange's ``<symbol>@trade`` stream like any client and notes when each trade arrives
  (wall clock) with its exchange event time;
* watches ``<lake>/unified_view/symbol=<S>/part-0.parquet``: each time it is rewritten, notes when (wall clock)
  and its newest ``as_of`` (the newest exchange event folded into the view).

A trade has reached the view at the first rewrite whose ``as_of`` is at or past the trade's event time; its
latency is that rewrite's time minus the trade's arrival. The script prints the distribution per interval
side by side, split into the speed layer's part (exchange event to the micro-batch commit, from the log) and
the sensor's and run's part; the interval dominates. Figures are printed, never asserted.

    PYTHONPATH=. python bench/serving_bench.py                        # the default interval (30 s), ~5 min
    PYTHONPATH=. python bench/serving_bench.py --intervals 5 30 --window 150
    PYTHONPATH=. python bench/serving_bench.py --quick                # smoke run: 5 s interval, 45 s, ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl

from crypto_assets.lake.microbatch_log import read_records
from crypto_assets.serving.processes import free_port, read_process_records
from crypto_assets.serving.store import view_file
from crypto_assets_tests.speed.harness import stop_process


@dataclass
class Observation:
    interval: int
    trades: list[tuple[float, int]] = field(default_factory=list)  # (arrival wall time, event time ms)
    writes: list[tuple[float, int]] = field(default_factory=list)  # (rewrite wall time, newest as_of ms)
    commit_lags: list[float] = field(default_factory=list)  # micro-batch commit minus its newest event, s
    startup_seconds: float = 0.0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


async def listen_trades(ws_port: int, symbol: str, until: float, into: list[tuple[float, int]]) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{ws_port}/ws/{symbol.lower()}@trade") as socket:
        while time.time() < until:
            try:
                message = await asyncio.wait_for(socket.recv(), timeout=max(until - time.time(), 0.1))
            except TimeoutError:
                break
            event = json.loads(message)
            if event.get("e") == "trade":
                into.append((time.time(), int(event["E"])))


async def watch_view(path: Path, until: float, into: list[tuple[float, int]]) -> None:
    seen = None
    while time.time() < until:
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp != seen:
            seen = stamp
            try:
                newest = pl.read_parquet(path, columns=["as_of"])["as_of"].max()
            except (OSError, pl.exceptions.ComputeError):
                continue  # replaced while being read; the next poll sees the new file
            if newest is not None:
                into.append((stamp / 1e9, int(newest.timestamp() * 1000)))
        await asyncio.sleep(0.1)


def measure(interval: int, window: float, symbol: str, workdir: Path) -> Observation:
    home = Path(tempfile.mkdtemp(prefix=f"serving-bench-{interval}s-", dir=workdir))
    (home / "crypto_assets.toml").write_text(
        f'home = "{home}"\n[synthetic]\nscale = "tiny"\n[exchange]\nbackfill = false\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CRYPTO_ASSETS_CONFIG": str(home / "crypto_assets.toml"),
        "DAGSTER_HOME": str(home / "dagster"),
        "CRYPTO_ASSETS_KAFKA_BROKER_PORT": str(free_port()),
    }
    env.pop("CRYPTO_ASSETS_HOME", None)
    log = (home / "up.log").open("w")
    command = [
        sys.executable,
        "-m",
        "crypto_assets.cli",
        "--home",
        str(home),
        "up",
        "--skip-batch",
        "--sensor-interval",
        str(interval),
        "--port",
        str(free_port()),
    ]
    began = time.time()
    up = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    observation = Observation(interval)
    try:
        wait_for(lambda: up.poll() is not None or "dagster-daemon" in read_process_records(home), 300, "the system")
        if up.poll() is not None:
            raise RuntimeError(f"crypto-assets up exited early; see {home / 'up.log'}")
        observation.startup_seconds = time.time() - began
        ws_port = read_process_records(home)["exchange-replay"].ports[1]
        print(
            f"  interval {interval}s: system up in {observation.startup_seconds:.0f}s; measuring for {window:.0f}s",
            flush=True,
        )
        until = time.time() + window

        async def both() -> None:
            await asyncio.gather(
                listen_trades(ws_port, symbol, until, observation.trades),
                watch_view(view_file(home / "lake", symbol), until + 3 * interval + 30, observation.writes),
            )

        asyncio.run(both())
        for record in read_records(home / "lake"):
            if record.max_event_time:
                committed = datetime.fromisoformat(record.committed_at)
                observation.commit_lags.append(
                    (committed - datetime.fromisoformat(record.max_event_time)).total_seconds()
                )
    finally:
        stop_process(up, timeout=120)
        log.close()
    return observation


def latencies(observation: Observation) -> list[float]:
    found = []
    for arrived, event_ms in observation.trades:
        reached = next(
            (written for written, as_of in observation.writes if as_of >= event_ms and written >= arrived), None
        )
        if reached is not None:
            found.append(reached - arrived)
    return found


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=int, nargs="+", default=[30], help="sensor intervals to measure (s)")
    parser.add_argument("--window", type=float, default=180.0, help="seconds of trades measured per interval")
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "serving")
    parser.add_argument("--quick", action="store_true", help="smoke run: one 5 s interval, 45 s of trades")
    args = parser.parse_args()
    if args.quick:
        args.intervals, args.window = [5], 45.0
    args.workdir.mkdir(parents=True, exist_ok=True)

    print(f"trade -> unified_view latency through the sensor, {args.symbol}, {args.window:.0f}s of trades per interval")
    results = [measure(interval, args.window, args.symbol, args.workdir) for interval in args.intervals]

    header = f"{'':<34}" + "".join(f"{f'interval {r.interval}s':>16}" for r in results)
    rows = [
        ("trades observed", [f"{len(r.trades):,}" for r in results]),
        ("trades seen in unified_view", [f"{len(latencies(r)):,}" for r in results]),
        ("unified_view rewrites", [f"{len(r.writes)}" for r in results]),
        ("latency median (s)", [f"{statistics.median(latencies(r)):.1f}" if latencies(r) else "n/a" for r in results]),
        ("latency p90 (s)", [f"{quantile(latencies(r), 0.9):.1f}" for r in results]),
        ("latency max (s)", [f"{max(latencies(r)):.1f}" if latencies(r) else "n/a" for r in results]),
        (
            "  of which stream commit, median (s)",
            [f"{statistics.median(r.commit_lags):.1f}" if r.commit_lags else "n/a" for r in results],
        ),
        (
            "  rewrite spacing, median (s)",
            [
                f"{statistics.median(b[0] - a[0] for a, b in zip(r.writes, r.writes[1:], strict=False)):.1f}"
                if len(r.writes) > 1
                else "n/a"
                for r in results
            ],
        ),
        ("system start-up (s)", [f"{r.startup_seconds:.0f}" for r in results]),
    ]
    print()
    print(header)
    for name, values in rows:
        print(f"{name:<34}" + "".join(f"{v:>16}" for v in values))
    print(
        "\nThe sensor interval bounds the wait for the next evaluation (about half of it on average, all of it at "
        "worst); the run that rebuilds the view adds the process start-up and the build. Target: unified_view "
        "updates within a minute of new data."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
