"""``crypto-assets forecast``: the forecast of one symbol from the lake's prophet_input or a daily CSV, using only the
days up to --as-of, with model selection and calibration on that data alone (the forecast graph's own functions)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

COLUMNS = ("model", "served", "ds", "yhat", "lower_80", "upper_80", "lower_95", "upper_95")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date like 2024-06-30, got {text!r}") from exc


def load_history(symbol: str, as_of: date | None, input_csv: Path | None, lake: Path | None):
    """The symbol's daily closes up to as_of (inclusive): from the CSV when given, else from the lake."""
    import polars as pl

    from crypto_assets.forecast.csv_input import read_daily_csv
    from crypto_assets.forecast.store import read_history

    history = read_daily_csv(input_csv, symbol) if input_csv else read_history(lake, symbol)
    if as_of is not None:
        if as_of < history["ds"].min():
            raise ValueError(f"--as-of {as_of} is before the first day of history ({history['ds'].min()})")
        history = history.filter(pl.col("ds") <= as_of)
    return history


def run_forecast(history, options=None, progress=None):
    """CV on `history` alone, then every model's forecast from its last day: rows in COLUMNS order."""
    import polars as pl

    from crypto_assets.forecast.cross_validation import cross_validate
    from crypto_assets.forecast.options import DEFAULT_OPTIONS
    from crypto_assets.forecast.served import forecast_all

    options = options or DEFAULT_OPTIONS
    cv = cross_validate(history, options, progress=progress)
    frame, _ = forecast_all(history, cv.metrics, options)
    order = {m: i for i, m in enumerate(options.models)}
    rows = frame.with_columns(pl.col("model").replace_strict(order, return_dtype=pl.Int32).alias("_order"))
    return rows.sort("_order", "horizon").select(COLUMNS), cv


def cmd_forecast(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from crypto_assets.forecast.cross_validation import TooShortHistory
    from crypto_assets.output import render

    input_csv = Path(args.input) if args.input else None
    if input_csv is not None and not input_csv.is_file():
        print(f"error: --input {input_csv} is not a file", file=sys.stderr)
        return 2
    settings = None if input_csv else args.settings
    symbol = args.symbol.upper() if input_csv else settings.symbol(args.symbol.upper()).name
    try:
        history = load_history(symbol, args.as_of, input_csv, settings.lake_dir if settings else None)
        with tqdm(total=None, unit="fold", desc=f"{symbol} cross-validation", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            rows, cv = run_forecast(history, progress=progress)
    except TooShortHistory as exc:
        print(f"error: {symbol}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{symbol}: {history.height:,} days up to {history['ds'].max()}; CV {cv.note()}", file=sys.stderr)
    sys.stdout.write(render(rows, args.format, max_rows=args.max_rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "forecast",
        help="forecast a symbol from the lake or a daily CSV with every candidate model; the served one is the CV champion",
        description="Cross-validates the candidate models on the history up to --as-of only, then prints one row per "
        "model and day ahead: " + ", ".join(COLUMNS) + " (served = the champion of that day's horizon).",
    )
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT (a configured symbol unless --input is given)")
    parser.add_argument("--as-of", type=_day, help="last day of history used (default: the last day available)")
    parser.add_argument(
        "--input", help="a daily CSV in the exchange's 1d layout (timestamp,open,high,low,close,volume)"
    )
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--max-rows", type=int, default=200, help="rows shown in table format (default 200)")
    parser.set_defaults(func=cmd_forecast)
