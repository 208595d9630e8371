"""The ``crypto-assets`` command line."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from crypto_assets.settings import Settings, SettingsError, load_settings, validate_symbol

DEFAULT_PORT = 3000


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "home", None):
        os.environ["CRYPTO_ASSETS_HOME"] = str(Path(args.home).resolve())
    return load_settings()


def _dagster_home(settings: Settings) -> Path:
    """A persistent DAGSTER_HOME (runs, event log, schedules) under the project home unless one is set."""
    from crypto_assets.dagster_home import prepare_dagster_home

    # Exported, so the webserver, daemon and run workers started from here share it and its settings.
    return prepare_dagster_home(Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster"))


def cmd_generate(args: argparse.Namespace) -> int:
    from crypto_assets.batch import synthetic

    settings = _settings(args)
    out = Path(args.out) if args.out else settings.synthetic_dir
    series = synthetic.SCALES[args.scale]
    with tqdm(total=len(series), unit="file", desc=f"generating {args.scale}") as bar:
        paths = synthetic.generate_dataset(
            out, scale=args.scale, seed=args.seed, progress=lambda symbol, rows: (bar.set_postfix_str(f"{symbol} {rows:,} rows"), bar.update())
        )
    for path in paths:
        print(path)
    return 0


def _copy_into_landing(source, landing: Path) -> Path:
    """Keep ingested files in the project home so the lake can always be rebuilt from them.

    The copy's name starts with its symbol, so later runs know the symbol without being told again, and
    carries a content digest, so two files of the same name never overwrite each other and the same file
    ingested twice is stored once.
    """
    digest = hashlib.sha256()
    with source.path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    name = f"{source.symbol}__{source.path.stem}-{digest.hexdigest()[:12]}{source.path.suffix.lower()}"
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / name
    if target.exists():
        return target
    tmp = landing / f".tmp-{name}"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source.path, tmp)
    except OSError:
        shutil.copyfile(source.path, tmp)
    os.replace(tmp, target)
    return target


def _time_span(source, latest: datetime):
    """First and last valid minute of a file; raises SourceFormatError for an unreadable one."""
    import polars as pl

    from crypto_assets.batch.minute_ingest import read_source

    frame, _ = read_source(source, latest)
    valid = frame.filter(pl.col("reason").is_null())
    return valid.select(pl.col("open_time").min().alias("first"), pl.col("open_time").max().alias("last")).collect().row(0)


def cmd_ingest(args: argparse.Namespace) -> int:
    from crypto_assets.batch.backfill.lock import LakeBusyError
    from crypto_assets.batch.minute_ingest import ingest_window
    from crypto_assets.batch.source_catalog import resolve_sources
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.batch.sources.errors import SourceFormatError
    from crypto_assets.settings import SourceSpec

    settings = _settings(args)
    symbol = validate_symbol(args.symbol) if args.symbol else None
    new_files, problems = discover_sources([SourceSpec(p, symbol) for p in args.paths], settings.symbol_names)
    latest = datetime.now(UTC) + timedelta(days=1)
    spans = []
    for source in tqdm(new_files, unit="file", desc="checking"):
        try:
            first, last = _time_span(source, latest)
        except SourceFormatError as exc:
            problems.append(exc)
            continue
        if first is None:
            problems.append(SourceFormatError(source.path, 0, "rows", "no valid rows"))
            continue
        spans.append((first, last))
        _copy_into_landing(source, settings.landing_dir)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not spans:
        return 2

    # Rebuild every month the new files touch from all sources, so overlapping files are merged once.
    sources, unplaced, _ = resolve_sources(settings)
    start = min(f for f, _ in spans).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = max(l for _, l in spans) + timedelta(minutes=1)
    try:
        with tqdm(total=len(sources), unit="file", desc="ingesting") as bar:
            result = ingest_window(
                sources, settings.lake_dir, settings.symbol_names, start, end,
                progress=lambda _: bar.update(), on_wait=tqdm.write,
            )  # fmt: skip
    except LakeBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"minute_raw: {result.minute.rows:,} rows in {len(result.minute.files)} partitions "
        f"({result.minute.bytes_written / 1e6:.1f} MB); read {result.rows_read:,}, "
        f"duplicates removed {result.duplicates_removed:,}, quarantined {result.quarantined:,}"
    )
    for report in result.failed_sources:
        print(f"error: {report.error}", file=sys.stderr)
    if result.quarantined:
        print(f"quarantined rows (with file, line and reason): {settings.lake_dir / 'quarantine'}")
    return 1 if problems or result.failed_sources or unplaced else 0


def _materialize_all(settings: Settings) -> bool:
    from dagster import DagsterInstance

    from crypto_assets.batch.runs import materialize_batch_range, whole_history

    first, last = whole_history(settings)
    print(f"materializing the batch graph for {first} .. {last} in one run (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    result = materialize_batch_range(DagsterInstance.get(), settings, first, last)
    for evaluation in result.get_asset_check_evaluations():
        status = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {status}")
    print("run succeeded" if result.success else "run FAILED")
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
    command = [sys.executable, "-m", "dagster", "dev", "-m", "crypto_assets.definitions", "-h", "127.0.0.1", "-p", str(port)]
    print(f"Dagster UI on http://127.0.0.1:{port}  (Ctrl-C stops it)")
    os.execv(sys.executable, command)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _dagster_home(settings)
    ok = _materialize_all(settings)
    if ok and not args.no_forecasts:
        ok = _materialize_forecasts(settings)
    if args.serve:
        return _serve(args.port)
    return 0 if ok else 1


def cmd_ui(args: argparse.Namespace) -> int:
    _dagster_home(_settings(args))
    return _serve(args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crypto-assets", description=__doc__)
    parser.add_argument("--home", help="project home (lake, landing, Dagster state); default $CRYPTO_ASSETS_HOME or ./var")
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
    demo.set_defaults(func=cmd_demo)

    ui = sub.add_parser("ui", help="serve the Dagster UI and daemon on 127.0.0.1")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT)
    ui.set_defaults(func=cmd_ui)

    from crypto_assets.batch.backfill import commands as backfill_commands
    from crypto_assets.exchange import commands as exchange_commands
    from crypto_assets.forecast import commands as forecast_commands
    from crypto_assets.serving import commands as serving_commands
    from streaming_sensor import commands as streaming_commands

    for package in (backfill_commands, exchange_commands, streaming_commands, serving_commands, forecast_commands):
        package.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
