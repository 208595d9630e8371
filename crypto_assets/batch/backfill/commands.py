"""Subcommands of ``crypto-assets`` for this package; :func:`register` adds them to the parser.

``crypto-assets backfill --from 2021-03-01 --to 2021-03-11 [--symbol S]`` fills the minute gaps of
``minute_raw`` in that window from the exchange, with the same function as the ``exchange_backfill`` asset.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date like 2021-03-01, got {text!r}") from exc


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def cmd_backfill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from crypto_assets.batch.backfill.checks import gap_table
    from crypto_assets.batch.backfill.fill import (
        DEFAULT_CHUNK_MINUTES,
        BackfillBusyError,
        backfill_window,
    )
    from crypto_assets.batch.backfill.gaps import symbol_starts
    from crypto_assets.batch.backfill.guard import synthetic_mix_reason
    from crypto_assets.exchange.client import ExchangeError
    from crypto_assets.exchange.source import open_exchange
    from crypto_assets.validation import validate_symbol

    settings = args.settings
    if args.to_day <= args.from_day:
        print(f"error: --to ({args.to_day}) must be after --from ({args.from_day}); --to is exclusive", file=sys.stderr)
        return 2
    symbols = [validate_symbol(s) for s in args.symbol] if args.symbol else None
    starts = symbol_starts(settings, symbols)  # raises SettingsError for a symbol that is not configured
    if not settings.exchange.backfill:
        print(
            "error: the exchange backfill is off (exchange.backfill = false); set it to true in the config file "
            "or CRYPTO_ASSETS_EXCHANGE_BACKFILL=true",
            file=sys.stderr,
        )
        return 2
    skip = synthetic_mix_reason(settings)
    if skip:
        print(f"error: not backfilling: {skip}", file=sys.stderr)
        return 2
    start = datetime.combine(args.from_day, datetime.min.time(), UTC)
    end = datetime.combine(args.to_day, datetime.min.time(), UTC)
    print(
        f"backfilling {', '.join(starts)} for {start:%Y-%m-%d} .. {end:%Y-%m-%d} (exclusive) from {settings.exchange.rest_url}"
    )

    with tqdm(total=0, unit="min", desc="backfill", dynamic_ncols=True) as bar:

        def on_plan(minutes: int) -> None:
            bar.reset(total=minutes)

        def on_chunk(report) -> None:
            bar.update(report.gap_minutes)
            bar.set_postfix_str(f"{report.symbol} {report.month}: +{report.added:,}, {report.requests} req")
            tqdm.write(f"committed {report.describe()}")

        try:
            with open_exchange(settings.exchange) as client:
                result = backfill_window(
                    settings.lake_dir,
                    starts,
                    client,
                    start,
                    end,
                    chunk_minutes=args.chunk_minutes or DEFAULT_CHUNK_MINUTES,
                    on_plan=on_plan,
                    on_chunk=on_chunk,
                    on_wait=tqdm.write,
                )
        except (ExchangeError, BackfillBusyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    print(
        f"added {result.added:,} minutes ({result.recovered:,} fetched by an earlier run) in {len(result.chunks)} "
        f"chunks, {result.requests} requests, {result.quarantined:,} quarantined"
    )
    remaining, empty = result.remaining, result.known_empty
    print(f"still missing: {int(remaining['minutes'].sum() or 0):,} minutes in {remaining.height} gaps")
    if empty.height:
        print(f"missing at the exchange too (outages, not asked for again): {empty.height} ranges")
        print(gap_table(empty, max_listed=args.list))
    if result.error:
        print(f"error: the exchange failed: {result.error}", file=sys.stderr)
        print("committed chunks are kept; run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; each sets ``func`` to a callable taking the parsed args."""
    backfill = sub.add_parser(
        "backfill",
        help="fill the minute gaps of minute_raw from the exchange (exchange.rest_url) for a date range",
        description="Ask the exchange for the minutes missing from minute_raw between --from and --to, merge them "
        "in (existing rows win) in chunks committed atomically, and record ranges the exchange has no candles for. "
        "Interrupted runs resume where they stopped.",
    )
    backfill.add_argument("--from", dest="from_day", type=_day, required=True, help="first day, e.g. 2021-03-01 (UTC)")
    backfill.add_argument("--to", dest="to_day", type=_day, required=True, help="end day, exclusive, e.g. 2021-03-11")
    backfill.add_argument("--symbol", action="append", help="only this configured symbol (repeatable; default: all)")
    backfill.add_argument("--chunk-minutes", type=_positive, help="missing minutes per commit (default 5000)")
    backfill.add_argument(
        "--list", type=_positive, default=25, help="exchange-empty ranges to list at the end (default 25)"
    )
    backfill.set_defaults(func=cmd_backfill)
