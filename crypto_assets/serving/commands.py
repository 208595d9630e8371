"""Subcommands of ``crypto-assets`` for this package; :func:`register` adds them to the parser.

``query`` and ``sql`` read the lake, ``status`` and ``storage`` report on the running system and its disk use,
``up`` runs the whole system locally and ``down`` stops one started elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import date

from crypto_assets.dagster_home import postgres_option


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date like 2021-03-01, got {text!r}") from exc


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_query(args: argparse.Namespace) -> int:
    import polars as pl

    from crypto_assets.output import render
    from crypto_assets.serving.store import read_view

    settings = args.settings
    symbol = settings.symbol(args.symbol.upper()).name
    if args.start and args.end and args.end < args.start:
        print(f"error: --to {args.end} is before --from {args.start}", file=sys.stderr)
        return 2
    try:
        view = read_view(settings.lake_dir, symbol)
    except FileNotFoundError as exc:
        print(
            f"error: {exc} (e.g. `dagster asset materialize -m crypto_assets.definitions --select unified_view "
            f"--partition {symbol}`, or run `crypto-assets up`)",
            file=sys.stderr,
        )
        return 1
    if args.start:
        view = view.filter(pl.col("date") >= args.start)
    if args.end:
        view = view.filter(pl.col("date") <= args.end)
    _print(render(view, args.format, args.max_rows, newest=True))
    return 0


def _pending_merge(args: argparse.Namespace):
    """A merge a killed (or running) ingest left unfinished: the lake read now may be half-merged."""
    import shlex

    from crypto_assets.batch.pending_merge import pending_merge

    home = getattr(args, "home", None)
    return pending_merge(args.settings.landing_dir, f"--home {shlex.quote(home)}" if home else "")


def cmd_sql(args: argparse.Namespace) -> int:
    from crypto_assets.output import render
    from crypto_assets.serving.lake_sql import SqlError, describe_tables, run_sql

    settings = args.settings
    pending = _pending_merge(args)
    if pending:
        print(f"warning: {pending.message()}", file=sys.stderr)
    if args.tables or not args.query:
        tables = describe_tables(settings.lake_dir)
        if args.format == "table":
            _print("".join(f"{name}: {columns}\n" for name, columns in tables.iter_rows()) or "the lake is empty\n")
        else:
            _print(render(tables, args.format))
        return 0
    try:
        result = run_sql(settings.lake_dir, args.query, allow_file_access=args.allow_file_access)
    except SqlError as exc:
        print(f"sql error: {exc}", file=sys.stderr)
        return 2
    _print(render(result, args.format, args.max_rows))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from crypto_assets.serving.status import (
        component_states,
        daemon_heartbeat,
        layer_freshness,
        render_status,
    )

    settings = args.settings
    components = component_states(settings)
    freshness = layer_freshness(settings)
    daemon = daemon_heartbeat(settings)
    pending = _pending_merge(args)
    if args.json:
        freshness["pending_merge"] = pending.as_json() if pending else None
        report = {"components": [asdict(c) for c in components], "daemon_heartbeat": daemon, **freshness}
        _print(json.dumps(report, indent=1, default=str) + "\n")
    else:
        note = f"\npending merge\n  {pending.message()}\n" if pending else ""
        _print(render_status(components, freshness, settings.home, daemon) + note)
    return 0


def cmd_storage(args: argparse.Namespace) -> int:
    import polars as pl

    from crypto_assets.serving.storage import (
        human_bytes,
        reclaim,
        reclaimable,
        render_storage,
        state_usage,
        usage,
    )

    settings = args.settings
    if args.reclaim:
        freed, done = reclaim(settings)
        for line in done:
            print(line)
        print(f"freed {human_bytes(freed)}")
        return 0
    table = pl.concat([usage(settings.lake_dir), state_usage(settings.speed_dir)])
    _print(render_storage(table, reclaimable(settings)))
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    from crypto_assets.forecast.store import reports_dir
    from crypto_assets.serving.reports import make_server

    settings = args.settings
    port = args.port or settings.serving.reports_port
    server = make_server(reports_dir(settings.home), port)
    print(f"forecast reports on http://127.0.0.1:{port}/ (from {reports_dir(settings.home)})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from crypto_assets.dagster_home import dagster_home_for
    from crypto_assets.serving.system import plan_for, run_system

    settings = args.settings
    if not args.no_speed:
        settings.require_local_lake("crypto-assets up with the speed layer (use --no-speed for the batch layer alone)")
    if args.sensor_interval is not None:
        # Exported for the Dagster processes `up` starts, which resolve the settings themselves.
        os.environ["CRYPTO_ASSETS_SERVING_SENSOR_MIN_INTERVAL_SECONDS"] = str(args.sensor_interval)
        serving = dataclasses.replace(settings.serving, sensor_min_interval_seconds=args.sensor_interval)
        settings = dataclasses.replace(settings, serving=serving)
    dagster_home_for(settings, args.dagster_postgres)
    plan = plan_for(settings, args.port, args.exchange, materialize=not args.skip_batch, speed_layer=not args.no_speed)
    return run_system(settings, plan)


def cmd_down(args: argparse.Namespace) -> int:
    from crypto_assets.serving.system import stop_recorded

    return stop_recorded(args.settings.home)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--max-rows", type=int, default=100, help="rows shown in table format (default 100)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands; each sets ``func`` to a callable taking the parsed args."""
    query = sub.add_parser("query", help="print the unified view (batch + speed layer) of a symbol for a date range")
    query.add_argument(
        "--symbol", required=True, help="a configured symbol, e.g. BTCUSDT (the table shows the newest days)"
    )
    query.add_argument("--from", dest="start", type=_day, help="first day, inclusive (default: the first stored)")
    query.add_argument(
        "--to", dest="end", type=_day, help="last day, inclusive (default: the last, today's running day)"
    )
    _output_options(query)
    query.set_defaults(func=cmd_query)

    sql = sub.add_parser(
        "sql",
        help="run SQL over the lake with Polars SQL; every dataset is a table (no query: list the tables)",
        description="Tables: each lake dataset (minute_raw, daily_raw, daily_filled, prophet_input, quarantine, "
        "unified_view, forecasts, ...) and speed_candles_1m / speed_daily (every committed micro-batch version, "
        'with batch_id). Example: crypto-assets sql "SELECT date, close, ma7 FROM daily_filled WHERE symbol = '
        "'BTCUSDT' ORDER BY date DESC LIMIT 5\"",
    )
    sql.add_argument("query", nargs="?", help="a SELECT statement")
    sql.add_argument("--tables", action="store_true", help="list the tables and their columns")
    sql.add_argument(
        "--allow-file-access",
        action="store_true",
        help="also allow Polars SQL's file functions (read_csv('path'), read_parquet, ...), which read any file "
        "you can; off by default, so a query reads only the lake's tables",
    )
    _output_options(sql)
    sql.set_defaults(func=cmd_sql)

    status = sub.add_parser("status", help="what is running, the newest batch and speed data, and the lag behind now")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    storage = sub.add_parser("storage", help="disk use per dataset and partition, and what can be reclaimed")
    storage.add_argument(
        "--reclaim", action="store_true", help="compact the speed layer and delete orphaned temp files"
    )
    storage.set_defaults(func=cmd_storage)

    reports = sub.add_parser(
        "reports", help="serve the forecast reports (<home>/reports) on 127.0.0.1 for the UI's links"
    )
    reports.add_argument("--port", type=int, help="port (default: serving.reports_port, 3001)")
    reports.set_defaults(func=cmd_reports)

    up = sub.add_parser(
        "up",
        help="run the whole system locally: replay exchange, broker, producer, Spark stream, batch and forecast "
        "graphs, Dagster",
        description="Starts every component on 127.0.0.1, materializes the batch graph and the forecasts, then serves "
        "the Dagster UI with the unified_view sensor on; supervises the processes and stops them all on Ctrl-C or "
        "SIGTERM.",
    )
    up.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    up.add_argument(
        "--exchange",
        choices=["replay", "configured"],
        default="replay",
        help="replay: start the replay exchange (default); configured: use exchange.rest_url/ws_url",
    )
    up.add_argument("--skip-batch", action="store_true", help="do not materialize the batch graph first")
    up.add_argument("--no-speed", action="store_true", help="start no broker, producer or stream")
    up.add_argument("--sensor-interval", type=int, help="seconds between sensor evaluations (default: serving setting)")
    postgres_option(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the processes a 'crypto-assets up' started (from their pid files)")
    down.set_defaults(func=cmd_down)
