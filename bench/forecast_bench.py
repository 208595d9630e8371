"""Time Prophet fit + rolling-origin CV on the full daily history of a few symbols.

    python bench/forecast_bench.py [--data ../shared/data/binance_spot_1d]

Prints seconds per symbol and in total, then CV metrics (MAPE per horizon for
Prophet / naive / drift, skill vs naive, coverage). Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # runnable without installing the package

from crypto_assets.forecast.charts import metrics_markdown
from crypto_assets.forecast.cross_validation import (
    cross_validate,
    make_executor,
    warm_up,
)
from crypto_assets.forecast.csv_input import read_daily_csv
from crypto_assets.forecast.model import forecast
from crypto_assets.forecast.options import ForecastOptions


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "binance_spot_1d"
    )
    p.add_argument("--symbols", nargs="+", default=["BTCUSDT", "ETHUSDT"])
    # Overrides for experiments; defaults come from ForecastOptions.
    p.add_argument("--workers", type=int)
    p.add_argument("--max-cutoffs", type=int)
    p.add_argument("--period-days", type=int)
    p.add_argument("--uncertainty-samples", type=int)
    p.add_argument("--changepoint-prior-scale", type=float)
    p.add_argument("--changepoint-range", type=float)
    return p.parse_args()


def options_from(args: argparse.Namespace) -> ForecastOptions:
    overrides = {
        "cv_workers": args.workers,
        "cv_max_cutoffs": args.max_cutoffs,
        "cv_period_days": args.period_days,
        "uncertainty_samples": args.uncertainty_samples,
        "changepoint_prior_scale": args.changepoint_prior_scale,
        "changepoint_range": args.changepoint_range,
    }
    return replace(ForecastOptions(), **{k: v for k, v in overrides.items() if v is not None})


def cpu_seconds() -> float:
    """User+system CPU of this process and of all finished, reaped descendants.

    Pool workers (and the cmdstan processes they ran) count once the pool has
    shut down; the figure does not depend on what else the machine is doing.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    args = parse_args()
    opts = options_from(args)
    print(f"options: {opts}")
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}")

    cpu0 = cpu_seconds()
    t_total = time.perf_counter()
    rows = []
    metrics = {}
    with make_executor(opts) as pool:
        t0 = time.perf_counter()
        n_ready = warm_up(pool, opts.cv_workers)
        startup = time.perf_counter() - t0
        for symbol in args.symbols:
            history = read_daily_csv(args.data / f"{symbol}_1d.csv", symbol)
            t0 = time.perf_counter()
            fc = forecast(history, opts, include_history=True)
            t_fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            cv = cross_validate(history, opts, executor=pool)
            t_cv = time.perf_counter() - t0
            n_cut = cv.predictions["cutoff"].n_unique()
            rows.append(
                (symbol, history.height, n_cut, t_fit, t_cv, fc.filter(fc["is_forecast"]).height)
            )
            metrics[symbol] = cv.metrics
    total = time.perf_counter() - t_total
    cpu = cpu_seconds() - cpu0

    print(f"\npool start-up ({n_ready} {opts.cv_mp_context} workers): {startup:6.1f} s")
    print(f"{'symbol':<10}{'days':>6}{'cutoffs':>9}{'fit+fcst s':>12}{'cv s':>8}{'sum s':>8}")
    for symbol, days, n_cut, t_fit, t_cv, _ in rows:
        print(f"{symbol:<10}{days:>6}{n_cut:>9}{t_fit:>12.1f}{t_cv:>8.1f}{t_fit + t_cv:>8.1f}")
    print(f"{'TOTAL (incl. start-up)':<33}{total:>20.1f} s")
    print(
        f"CPU used by all processes: {cpu:.1f} s -> {cpu / (os.cpu_count() or 1):.1f} s wall "
        f"if the {os.cpu_count()} cores were ours alone (load average now {os.getloadavg()[0]:.2f})"
    )

    for symbol, m in metrics.items():
        print(
            f"\n{symbol} (MAPE as %, skill = 1 - MAPE/MAPE_naive, interval {opts.interval_width:.0%})"
        )
        print(metrics_markdown(m, symbol))


if __name__ == "__main__":  # guard required: spawn workers re-import this file
    main()
