"""The ``crypto-assets`` command line."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from crypto_assets.dagster_home import DagsterHomeError, dagster_home_for, postgres_option
from crypto_assets.settings import Settings, load_settings
from crypto_assets.validation import SettingsError, is_url, validate_symbol

DEFAULT_PORT = 3000
COMMANDS = (
    "crypto_assets.batch.backfill.commands",
    "crypto_assets.exchange.replay.commands",
    "streaming_sensor.commands",
    "crypto_assets.serving.commands",
    "crypto_assets.forecast.commands",
)


def _settings(args: argparse.Namespace) -> Settings:
    """The project settings of this process, resolved once and handed to the command as ``args.settings``."""
    if getattr(args, "home", None):
        os.environ["CRYPTO_ASSETS_HOME"] = args.home if is_url(args.home) else str(Path(args.home).resolve())
    return load_settings()


def cmd_generate(args: argparse.Namespace) -> int:
    from crypto_assets.batch import synthetic

    settings = args.settings
    out = Path(args.out) if args.out else settings.synthetic_dir
    series = synthetic.SCALES[args.scale]
    with tqdm(total=len(series), unit="file", desc=f"generating {args.scale}") as bar:
        paths = synthetic.generate_dataset(
            out,
            scale=args.scale,
            seed=args.seed,
            progress=lambda symbol, rows: (bar.set_postfix_str(f"{symbol} {rows:,} rows"), bar.update()),
        )
    for path in paths:
        print(path)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from crypto_assets.batch.backfill.lock import LakeBusyError
    from crypto_assets.batch.minute_ingest import ingest_files
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    settings = args.settings
    symbol = validate_symbol(args.symbol) if args.symbol else None
    new_files, problems = discover_sources([SourceSpec(p, symbol) for p in args.paths], settings.symbol_names)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not new_files:
        return 2
    try:
        with tqdm(total=len(new_files), unit="file", desc="ingesting") as bar:
            result = ingest_files(
                new_files,
                settings.lake_dir,
                settings.landing_dir,
                settings.symbol_names,
                progress=lambda _: bar.update(),
                on_wait=tqdm.write,
            )
    except LakeBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for landed in result.landed:
        if landed.warning:
            print(f"warning: {landed.warning}", file=sys.stderr)
        if landed.already:
            print(
                f"{landed.entry.original}: already ingested (ingest #{landed.entry.order}, same sha256); nothing to do"
            )
    if result.stray_temps_removed:
        print(f"removed {result.stray_temps_removed} temporary file(s) left by an interrupted writer")
    print(
        f"minute_raw: {result.minute.rows:,} rows in {len(result.minute.files)} partitions "
        f"({result.minute.bytes_written / 1e6:.1f} MB); read {result.rows_read:,}, "
        f"duplicates removed {result.duplicates_removed:,}, conflicts {result.conflicts.height:,}, "
        f"quarantined {result.quarantined:,}"
    )
    if result.conflicts.height:
        print(f"conflicting versions (the later ingest won; losers kept in {settings.lake_dir / 'minute_conflicts'}):")
        print("  " + result.conflict_summary().replace("\n", "\n  "))
    for report in result.failed_sources:
        print(f"error: {report.error}", file=sys.stderr)
    if result.quarantined:
        print(f"quarantined rows (with file, line and reason): {settings.lake_dir / 'quarantine'}")
    if result.failed_sources and len(result.failed_sources) == len(new_files):
        return 2
    return 1 if problems or result.failed_sources else 0


def _materialize_all(settings: Settings) -> bool:
    from dagster import DagsterInstance

    from crypto_assets.batch_runs import materialize_batch_range, whole_history

    first, last = whole_history(settings)
    print(f"materializing the batch graph for {first} .. {last} in one run (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    result = materialize_batch_range(DagsterInstance.get(), settings, first, last)
    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed]
    for evaluation in failed:  # the passing ones are on each asset's Checks tab
        print(
            f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: FAILED "
            f"({evaluation.severity.value}): {evaluation.description}"
        )
    print(
        f"batch run {'succeeded' if result.success else 'FAILED'} ({result.run_id[:8]}); "
        f"checks: {len(evaluations) - len(failed)} of {len(evaluations)} passed"
    )
    return result.success


def _materialize_forecasts(settings: Settings) -> bool:
    from dagster import DagsterInstance

    from crypto_assets.forecast.runs import materialize_forecasts

    print("materializing the forecast graph (Prophet, cross-validation, reports) per symbol")
    ok = True
    for run in materialize_forecasts(DagsterInstance.get(), settings):
        if run.success is None:
            print(f"  {run.symbol}: skipped, {run.note}")
            continue
        ok &= run.success
        passed = ", ".join(f"{name} {'passed' if good else 'WARN'}" for name, good in run.checks)
        print(f"  {run.symbol}: {run.note} on {run.days:,} days; checks: {passed}")
    return ok


def _serve(port: int) -> int:
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        "crypto_assets.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    print(f"Dagster UI on http://127.0.0.1:{port}  (Ctrl-C stops it)")
    os.execv(sys.executable, command)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = args.settings
    dagster_home_for(settings, args.dagster_postgres)
    ok = _materialize_all(settings)
    if ok and not args.no_forecasts:
        ok = _materialize_forecasts(settings)
    if args.serve:
        return _serve(args.port)
    return 0 if ok else 1


def cmd_ui(args: argparse.Namespace) -> int:
    dagster_home_for(args.settings, args.dagster_postgres)
    return _serve(args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crypto-assets",
        description="Crypto market data as a Dagster asset graph: batch, speed and serving layers, and forecasts.",
    )
    parser.add_argument(
        "--home", help="project home (lake, landing, Dagster state); default $CRYPTO_ASSETS_HOME or ./var"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write the deterministic synthetic market as Kaggle-style CSV")
    gen.add_argument("--scale", choices=["tiny", "small", "full"], default="small")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--out", help="output directory (default: <home>/synthetic)")
    gen.set_defaults(func=cmd_generate)

    ing = sub.add_parser("ingest", help="add 1-minute history files (Kaggle CSV, Binance dumps .csv/.zip) to the lake")
    ing.add_argument("paths", nargs="+", help="files, directories or globs")
    ing.add_argument("--symbol", help="symbol of the files when their names do not start with it")
    ing.set_defaults(func=cmd_ingest)

    demo = sub.add_parser(
        "demo", help="materialize the batch graph for the configured data, then the forecasts where history allows"
    )
    demo.add_argument("--no-forecasts", action="store_true", help="only the batch graph")
    demo.add_argument("--serve", action="store_true", help="then serve the Dagster UI")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    postgres_option(demo)
    demo.set_defaults(func=cmd_demo)

    ui = sub.add_parser("ui", help="serve the Dagster UI and daemon on 127.0.0.1")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT)
    postgres_option(ui)
    ui.set_defaults(func=cmd_ui)

    # Each domain adds its subcommands; the speed layer builds on this package, so it is loaded by name.
    for package in COMMANDS:
        importlib.import_module(package).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.settings = _settings(args)
        return args.func(args)
    except (SettingsError, DagsterHomeError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full disk left the lake as it was (the lake's writers raise DiskFullError, naming the file).
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
