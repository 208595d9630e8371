"""Forecast benchmark: the out-of-sample acceptance figures and the forecast graph's wall time, in one run.

    python bench/forecast_bench.py [--data ../shared/data/binance_spot_1d] [--skip-graph] [--skip-backtest]

1. Backtest per symbol: model selection and conformal calibration on the real daily closes up to 2023-12-31
   (53 weekly origins), then that choice scored at weekly origins across 2024 at 1, 7 and 30 days: served skill
   vs naive with its block-bootstrap 95% interval, Prophet's and naive's MAPE, 80%/95% coverage; targets with met.
2. The whole forecast graph (forecast_metrics -> forecasts -> forecast_results) for both symbols as
   `crypto-assets demo` / `up` runs it (one Dagster run per symbol on a real instance) on a lake holding the whole
   real daily history, timed next to the previous graph's figure.
Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import Executor
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # runnable without installing the package

# Previous figure of the forecast graph's work: Prophet fit + 24 monthly CV cut-offs, both symbols, quiet machine.
PREVIOUS_GRAPH_S = 24.2
GRAPH_TARGET_S = 90.0
TRAIN_END = date(2023, 12, 31)
TEST_END = date(2024, 12, 31)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "binance_spot_1d")
    p.add_argument("--symbols", nargs="+", default=["BTCUSDT", "ETHUSDT"])
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "bench" / "out" / "forecast")
    p.add_argument("--skip-backtest", action="store_true")
    p.add_argument("--skip-graph", action="store_true")
    return p.parse_args()


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _ready(delay_s: float) -> int:
    time.sleep(delay_s)
    return os.getpid()


def warm_up(executor: Executor, n_workers: int, timeout_s: float = 60.0) -> int:
    """Start the pool's workers now (a spawned worker spends ~2-3 s importing Prophet).

    A pool starts workers on demand and a fast worker can take every small task,
    so ask in rounds until n_workers distinct processes have answered. Returns
    how many did.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < n_workers and time.monotonic() < deadline:
        seen.update(executor.map(_ready, [0.2] * n_workers))
    return len(seen)


def run_backtests(args: argparse.Namespace) -> None:
    import polars as pl

    from crypto_assets.forecast.cross_validation import make_executor
    from crypto_assets.forecast.csv_input import read_daily_csv
    from crypto_assets.forecast.options import DEFAULT_OPTIONS as OPTS
    from crypto_assets_tests.forecast.backtest import backtest

    print(f"\n== Backtest: selection and calibration up to {TRAIN_END}, weekly origins across 2024 ==")
    with make_executor(OPTS) as pool:
        warm_up(pool, OPTS.cv_workers)
        for symbol in args.symbols:
            history = read_daily_csv(args.data / f"{symbol}_1d.csv", symbol).filter(pl.col("ds") <= TEST_END)
            t0 = time.perf_counter()
            bt = backtest(history, TRAIN_END, OPTS, executor=pool)
            seconds = time.perf_counter() - t0
            folds = bt.selection["n"].max() + bt.test["cutoff"].n_unique()
            print(f"\n{symbol}: {folds} folds x {len(OPTS.models)} models in {seconds:.1f} s")
            print(
                "| horizon | served | origins | served MAPE | naive MAPE | Prophet MAPE | skill [95% CI] | 80% cov | 95% cov | skill >= -0.02 | Prophet <= 1.5x naive |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            pooled, n = 0.0, 0
            for r in bt.summary.iter_rows(named=True):
                prophet_ok = "" if r["horizon"] != 1 else met(r["prophet_mape"] <= 1.5 * r["naive_mape"])
                print(
                    f"| {r['horizon']}d | {r['served_model']} | {r['origins']} | {r['served_mape']:.2%} | {r['naive_mape']:.2%} | "
                    f"{r['prophet_mape']:.2%} | {r['skill']:+.3f} [{r['skill_lo']:+.3f}, {r['skill_hi']:+.3f}] | "
                    f"{r['coverage_80']:.0%} | {r['coverage_95']:.0%} | {met(r['skill'] >= -0.02)} | {prophet_ok} |"
                )
                pooled += r["coverage_80"] * r["origins"]
                n += r["origins"]
            print(
                f"80% coverage pooled over the horizons: {pooled / n:.1%} (target 72-88%: {met(0.72 <= pooled / n <= 0.88)})"
            )


def run_graph(args: argparse.Namespace) -> None:
    from crypto_assets.dagster_home import prepare_dagster_home
    from crypto_assets_tests.forecast.daily_lake import read_closes, write_daily_lake

    home = (args.workdir / "home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "crypto_assets.toml"
    config.write_text(f'home = "{home}"\n[exchange]\nbackfill = false\n')
    os.environ["CRYPTO_ASSETS_CONFIG"] = str(config)
    from crypto_assets.settings import load_settings

    settings = load_settings()
    write_daily_lake(
        settings.lake_dir, {s: read_closes(args.data / f"{s}_1d.csv") for s in args.symbols}, settings.symbol_names
    )
    prepare_dagster_home(args.workdir / f"dagster-{os.getpid()}")
    from dagster import DagsterInstance

    from crypto_assets.forecast.runs import materialize_forecasts

    print(
        f"\n== Forecast graph: one Dagster run per symbol, as `crypto-assets demo`/`up` runs it (load average {os.getloadavg()[0]:.1f}) =="
    )
    t0 = time.perf_counter()
    runs = materialize_forecasts(DagsterInstance.get(), settings, log_level="WARNING")
    total = time.perf_counter() - t0
    for run in runs:
        print(f"  {run.symbol}: {run.days:,} days, {run.note}")
    print(
        f"forecast graph, {len(runs)} symbols: {total:.1f} s (previous graph: {PREVIOUS_GRAPH_S} s for Prophet + 24 monthly "
        f"cut-offs; target < {GRAPH_TARGET_S:.0f} s on 2 cores: {met(total < GRAPH_TARGET_S)}); load average now {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    args = parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}")
    if not args.skip_backtest:
        run_backtests(args)
    if not args.skip_graph:
        run_graph(args)


if __name__ == "__main__":  # guard required: spawn workers re-import this file
    main()
