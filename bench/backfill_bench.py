#!/usr/bin/env python
"""Benchmark of the exchange backfill: a 30-day gap of two symbols (86,400 candles) filled from the exchange
replay server serving the synthetic market.

Setup (untimed): the replay server runs as its own process (``crypto-assets exchange-replay --scale tiny``),
as a real exchange would be; a lake holds the same market's minutes for December 2025 to February 2026 in
``minute_raw``, from which 2026-01-01 .. 2026-01-31 (exclusive) is deleted for BTCUSDT and ETHUSDT.

Measured: :func:`crypto_assets.batch.backfill.fill.backfill_window` over that window, in a fresh process per
case (so peak RSS is the case's own) on a fresh copy of the lake, for several chunk sizes side by side: wall
time, candles/s, requests (klines pages plus one exchange-clock request per requested range), chunks, peak
RSS. Every case is then checked: the restored January partitions must equal the deleted rows exactly.

    PYTHONPATH=. python bench/backfill_bench.py                  # ~1 minute
    PYTHONPATH=. python bench/backfill_bench.py --chunks 5000    # one case

Target: < 10 s for the 86,400 candles (reported, never asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SCALE, SEED = "tiny", 42
LAKE_SPAN = (datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
GAP = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC))
TARGET_SECONDS = 10.0
RESULT_MARKER = "BENCH_RESULT "


def start_replay(workdir: Path) -> tuple[subprocess.Popen, str]:
    """The replay server in its own process; returns it and its REST URL once it listens."""
    command = [
        sys.executable,
        "-m",
        "crypto_assets.cli",
        "--home",
        str(workdir / "replay-home"),
        "exchange-replay",
        "--scale",
        SCALE,
        "--seed",
        str(SEED),
        "--symbols",
        *SYMBOLS,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("CRYPTO_ASSETS_CONFIG", None)
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = process.stdout.readline()
    if not line.startswith("REST "):
        process.kill()
        raise RuntimeError(f"the replay server did not start: {line!r}")
    return process, line.split()[1]


def build_lake(lake: Path) -> int:
    """minute_raw of the synthetic market over LAKE_SPAN with GAP deleted; returns the rows deleted."""
    import polars as pl

    from crypto_assets.batch.minute_ingest import MINUTE_DATASET
    from crypto_assets.exchange.replay.market import Market
    from crypto_assets.lake.datasets import write_months
    from crypto_assets.lake.layout import months_between
    from crypto_assets.schema import MINUTE_SCHEMA

    market = Market.synthetic(SCALE, SEED, list(SYMBOLS))
    market.ensure(int(LAKE_SPAN[1].timestamp() * 1000))
    frames = []
    for symbol in SYMBOLS:
        c = market.candles[symbol]
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "open_time": pl.Series(c.open_ms, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.cast_time_unit("us"),
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                }
            ).with_columns(pl.col("open_time").dt.replace_time_zone("UTC"))
        )
    frame = (
        pl.concat(frames).filter(pl.col("open_time").is_between(*LAKE_SPAN, closed="left")).cast(dict(MINUTE_SCHEMA))
    )
    expected = frame.filter(pl.col("open_time").is_between(*GAP, closed="left"))
    expected.write_parquet(lake.parent / "expected.parquet")
    holed = frame.filter(~pl.col("open_time").is_between(*GAP, closed="left"))
    write_months(holed, lake, MINUTE_DATASET, "open_time", SYMBOLS, months_between(*LAKE_SPAN))
    return expected.height


def run_case(lake: Path, rest_url: str, chunk_minutes: int) -> dict[str, object]:
    """The measured backfill (in a fresh process)."""
    from crypto_assets.batch.backfill.fill import backfill_window
    from crypto_assets.exchange.client import ExchangeClient
    from crypto_assets.settings import ExchangeSettings

    starts = {symbol: date(2025, 12, 1) for symbol in SYMBOLS}
    with ExchangeClient(ExchangeSettings(rest_url=rest_url)) as client:
        began = time.perf_counter()
        result = backfill_window(lake, starts, client, *GAP, chunk_minutes=chunk_minutes)
        seconds = time.perf_counter() - began
        total_requests = client.requests_sent
    return {
        "chunk_minutes": chunk_minutes,
        "seconds": seconds,
        "candles": result.added,
        "requests": result.requests,
        "requests_total": total_requests,  # plus the exchange-clock request before planning
        "chunks": len(result.chunks),
        "fetch_seconds": sum(c.fetch_seconds for c in result.chunks),
        "remaining_minutes": int(result.remaining["minutes"].sum() or 0),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def verify(lake: Path) -> bool:
    import polars as pl

    from crypto_assets.batch.pipeline import read_minutes

    expected = pl.read_parquet(lake.parent.parent / "expected.parquet")
    restored = (
        read_minutes(lake, list(SYMBOLS), *GAP).filter(pl.col("open_time").is_between(*GAP, closed="left")).collect()
    )
    return restored.sort("symbol", "open_time").equals(expected.sort("symbol", "open_time"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", default="1440,5000,20000", help="chunk sizes in minutes, comma-separated")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case as JSON (lake,url,chunk)
    args = parser.parse_args()

    if args.case:
        lake, url, chunk = args.case.split(",")
        print(RESULT_MARKER + json.dumps(run_case(Path(lake), url, int(chunk))), flush=True)
        return 0

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    replay, rest_url = start_replay(workdir)
    try:
        holed = workdir / "holed" / "lake"
        shutil.rmtree(holed.parent, ignore_errors=True)
        holed.mkdir(parents=True)
        deleted = build_lake(holed)
        shutil.copy(holed.parent / "expected.parquet", workdir / "expected.parquet")
        print(
            f"gap: {GAP[0]:%Y-%m-%d} .. {GAP[1]:%Y-%m-%d} (exclusive), {', '.join(SYMBOLS)}: {deleted:,} minutes; "
            f"exchange: replay server process at {rest_url} (synthetic {SCALE}, seed {SEED})"
        )
        rows = []
        for chunk in [int(c) for c in args.chunks.split(",")]:
            lake = workdir / f"run-{chunk}" / "lake"
            shutil.rmtree(lake.parent, ignore_errors=True)
            shutil.copytree(holed, lake)
            command = [sys.executable, __file__, "--case", f"{lake},{rest_url},{chunk}"]
            out = subprocess.run(
                command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True
            ).stdout
            result = json.loads(next(l for l in out.splitlines() if l.startswith(RESULT_MARKER))[len(RESULT_MARKER) :])
            result["exact"] = verify(lake)
            rows.append(result)
    finally:
        replay.terminate()
        replay.wait(timeout=30)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)"
        + (" - busy: the figures are pessimistic" if load[0] > (os.cpu_count() or 1) else "")
    )
    print()
    print(
        "| chunk (min) | wall s | of which exchange s | candles | candles/s | requests | chunks | peak RSS MB "
        "| restored exactly | < 10 s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(
            f"| {r['chunk_minutes']:,} | {r['seconds']:.2f} | {r['fetch_seconds']:.2f} | {r['candles']:,} | {r['candles'] / r['seconds']:,.0f} | "
            f"{r['requests_total']} | {r['chunks']} | {r['rss_mb']:.0f} | {'yes' if r['exact'] else 'NO'} | "
            f"{'yes' if r['seconds'] < TARGET_SECONDS else 'no'} |"
        )
    return 0 if all(r["exact"] and r["candles"] == deleted for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
