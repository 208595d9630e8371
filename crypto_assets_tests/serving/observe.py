"""What a long-running ``crypto-assets up`` looks like from outside, for the soak benchmark and the chaos test:
each component's memory, open files and threads (from ``/proc``), the disk each ``var/`` folder uses, the run
and tick counts and the asset page's latency through the webserver's GraphQL API, the sensor's lag behind the
newest micro-batch, and whether ``unified_view`` still matches the exchange.

The oracle for ``unified_view`` is the exchange's own candles, fetched over its REST API like any client:

* every day before today that the view holds from ``since`` on equals the exchange's daily kline;
* today's running row covers exactly the exchange's closed minutes up to the minute of its ``as_of``, the
  minute still forming counted or not: ``minute_count`` is one of the two, ``open`` is the first minute's, and
  high, low and volume lie between the day without that minute and the day with all of it. A lost minute
  shows as a missing count and volume, a duplicated one as a count or volume above the bracket.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.exchange.client import ExchangeClient
from crypto_assets.lake.microbatch_log import read_records
from crypto_assets.serving.processes import read_process_records
from crypto_assets.serving.store import view_file
from crypto_assets.serving.webserver import graphql
from crypto_assets.settings import ExchangeSettings
from crypto_assets_tests.speed.harness import descendants

# Processes a component starts for one Dagster run or step: they come and go, so they are not its footprint.
TRANSIENT = ("execute_run", "execute_step", "api grpc")  # a run worker, a step worker, a code server's child
# The components ``up`` restarts, in the order the chaos harness kills them.
CHAOS_ORDER = ["broker", "producer", "stream", "code-server", "dagster-daemon", "dagster-webserver", "reports"]


@dataclass
class Footprint:
    rss_mb: float = 0.0
    open_files: int = 0
    threads: int = 0
    processes: int = 0


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def footprint(pid: int, children: bool = True) -> Footprint:
    """Resident memory, open files and threads of a process and (with ``children``) its long-lived descendants."""
    found = Footprint()
    for member in [pid, *(descendants(pid) if children else [])]:
        try:
            if member != pid and any(word in _command(member) for word in TRANSIENT):
                continue
            status = _status(member)
            found.rss_mb += int(status.get("VmRSS", "0 kB").split()[0]) / 1024
            found.threads += int(status.get("Threads", "0"))
            found.open_files += len(os.listdir(f"/proc/{member}/fd"))
            found.processes += 1
        except (OSError, ValueError):
            continue  # exited between the listing and the read
    return found


def component_footprints(home: Path) -> dict[str, Footprint]:
    """Every component ``up`` records a pid for; ``up`` itself without the components it started."""
    return {name: footprint(record.pid, children=name != "up") for name, record in read_process_records(home).items()}


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def disk_by_folder(home: Path) -> dict[str, int]:
    """Bytes under each top-level folder of the home, and the lake's speed and serving datasets apart."""
    found = {entry.name: folder_bytes(entry) for entry in sorted(home.iterdir()) if entry.is_dir()}
    lake = home / "lake"
    for dataset in ("speed_microbatches", "unified_view"):
        if (lake / dataset).is_dir():
            found[f"lake/{dataset}"] = folder_bytes(lake / dataset)
    return found


# What the asset page of the UI asks for first: the definition, the latest materializations and the checks.
ASSET_PAGE_QUERY = """
query AssetPage($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      id description groupName opNames jobNames
      partitionKeys
      assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } }
    }
  }
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 25) { runId timestamp partition metadataEntries { label } }
    }
  }
}
"""

COUNTS_QUERY = """
query Counts($repo: RepositorySelector!) {
  runsOrError { ... on Runs { count } }
  sensorsOrError(repositorySelector: $repo) {
    ... on Sensors { results { name sensorState { ticks(limit: 100000) { id } } } }
  }
  schedulesOrError(repositorySelector: $repo) {
    ... on Schedules { results { name scheduleState { ticks(limit: 100000) { id } } } }
  }
}
"""

REPOSITORY = {"repositoryLocationName": "crypto_assets", "repositoryName": "__repository__"}


def asset_page_seconds(port: int, asset: str = "unified_view", tries: int = 3) -> float:
    """The median time of the asset page's GraphQL query."""
    times = []
    for _ in range(tries):
        began = time.perf_counter()
        graphql(port, ASSET_PAGE_QUERY, {"key": {"path": [asset]}})
        times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def run_and_tick_counts(port: int) -> tuple[int, int]:
    data = graphql(port, COUNTS_QUERY, {"repo": REPOSITORY}, timeout=120)
    runs = data["runsOrError"]["count"]
    ticks = sum(len(s["sensorState"]["ticks"]) for s in data["sensorsOrError"].get("results", []))
    ticks += sum(len(s["scheduleState"]["ticks"]) for s in data["schedulesOrError"].get("results", []))
    return runs, ticks


def sensor_lag_seconds(home: Path, view_written: datetime | None) -> float | None:
    """How long the newest micro-batch has waited for a view that includes it (0 once one was written after it)."""
    records = read_records(home / "lake")
    if not records:
        return None
    newest = datetime.fromisoformat(records[-1].committed_at)
    if view_written is not None and view_written >= newest:
        return 0.0
    return (datetime.now(UTC) - newest).total_seconds()


def view_written_at(home: Path, symbols: list[str]) -> datetime | None:
    """When the oldest of the symbols' view files was last rewritten."""
    stamps = []
    for symbol in symbols:
        path = view_file(home / "lake", symbol)
        if not path.is_file():
            return None
        stamps.append(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    return min(stamps)


@dataclass
class ViewCheck:
    whole: bool  # every compared day matches the exchange and today's row is current
    missing_minutes: int = 0  # exchange minutes of today the view's count falls short of
    problems: list[str] = field(default_factory=list)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_view(
    rest_url: str,
    lake: Path,
    symbols: list[str],
    since: date,
    fresh_seconds: float = 180,
    newer_than: datetime | None = None,
) -> ViewCheck:
    """Compare each symbol's stored ``unified_view`` with the exchange (see the module docstring). Today's row
    must be at most ``fresh_seconds`` old and, with ``newer_than``, reach past that moment."""
    check = ViewCheck(whole=True)
    now = datetime.now(UTC)
    oldest = max(now - timedelta(seconds=fresh_seconds), newer_than or now - timedelta(seconds=fresh_seconds))
    with ExchangeClient(ExchangeSettings(rest_url=rest_url)) as client:
        for symbol in symbols:
            path = view_file(lake, symbol)
            if not path.is_file():
                check.whole = False
                check.problems.append(f"{symbol}: no unified_view yet")
                continue
            view = pl.read_parquet(path).filter(pl.col("date") >= since)
            today = now.date()
            start = datetime.combine(since, datetime.min.time(), UTC)
            minutes = client.klines_frame(symbol, start, now)
            daily = {row["date"]: row for row in aggregate_daily(minutes.lazy()).collect().iter_rows(named=True)}
            for row in view.iter_rows(named=True):
                if row["date"] < today:
                    _compare_closed_day(check, symbol, row, daily.get(row["date"]))
                elif row["date"] == today:
                    _compare_running_day(check, symbol, row, minutes, oldest)
    return check


def _compare_closed_day(check: ViewCheck, symbol: str, row: dict, exchange: dict | None) -> None:
    if exchange is None:
        return  # a day the exchange has no minutes of (filled in the view, flagged is_filled)
    differs = [c for c in ("open", "high", "low", "close", "volume") if not _close(row[c], exchange[c])]
    if differs or row["minute_count"] != exchange["minute_count"]:
        check.whole = False
        check.missing_minutes += max(exchange["minute_count"] - row["minute_count"], 0)
        check.problems.append(
            f"{symbol} {row['date']}: {', '.join(differs) or 'minute_count'} differ from the exchange's daily candle "
            f"({row['minute_count']} of {exchange['minute_count']} minutes)"
        )


def _compare_running_day(check: ViewCheck, symbol: str, row: dict, minutes: pl.DataFrame, oldest: datetime) -> None:
    as_of = row["as_of"]
    if as_of < oldest:
        check.whole = False
        check.problems.append(f"{symbol} today: as_of {as_of:%H:%M:%S} is before {oldest:%H:%M:%S}")
    day_start = datetime.combine(row["date"], datetime.min.time(), UTC)
    cut = as_of.replace(second=0, microsecond=0)
    today = minutes.filter(pl.col("open_time") >= day_start)
    before = today.filter(pl.col("open_time") < cut)
    through = today.filter(pl.col("open_time") <= cut)
    if before.is_empty():
        return
    expected = before.height
    if row["minute_count"] not in (before.height, before.height + 1):
        check.whole = False
        check.missing_minutes += max(expected - row["minute_count"], 0)
        check.problems.append(
            f"{symbol} today: {row['minute_count']} minutes up to {as_of:%H:%M:%S}; the exchange has {expected} "
            f"closed (+1 forming)"
        )
        return
    # The forming minute's full candle is known once it has closed at the exchange; until then, no upper bound.
    forming = through.height == before.height
    high_top = math.inf if forming else through["high"].max()
    low_volume = before["volume"].sum()
    high_volume = math.inf if forming else through["volume"].sum()
    bottom_low = -math.inf if forming else through["low"].min()
    bounds = {
        "open": _close(row["open"], today["open"][0]),
        "high": before["high"].max() - 1e-9 <= row["high"] <= high_top + 1e-9,
        "low": bottom_low - 1e-9 <= row["low"] <= before["low"].min() + 1e-9,
        "volume": low_volume * (1 - 1e-9) - 1e-9 <= row["volume"] <= high_volume * (1 + 1e-9) + 1e-9,
    }
    if not all(bounds.values()):
        check.whole = False
        check.problems.append(
            f"{symbol} today: {', '.join(k for k, ok in bounds.items() if not ok)} outside the exchange's day "
            f"up to {as_of:%H:%M:%S}"
        )


@dataclass
class Chaos:
    component: str
    restart_s: float | None = None  # until ``up`` recorded a new process for it
    missing_minutes: int = 0  # most minutes the view lacked between the kill and the repair
    whole_after_s: float | None = None  # until the view matched the exchange again
    problems: list[str] = field(default_factory=list)


def kill_component(home: Path, name: str) -> int:
    """SIGKILL the component's whole process group, as a crash of it and its helpers would; returns its pid."""
    record = read_process_records(home)[name]
    os.killpg(record.pid, signal.SIGKILL)
    return record.pid


def chaos_round(home: Path, name: str, rest_url: str, symbols: list[str], since: date, timeout: float) -> Chaos:
    """Kill one component, then wait until ``up`` has restarted it and the view matches the exchange again."""
    killed_at = time.monotonic()
    outcome = Chaos(name)
    old_pid = kill_component(home, name)
    whole_from = None  # the view must reach a minute past the restart, so the outage lies inside what is compared
    while time.monotonic() < killed_at + timeout:
        record = read_process_records(home).get(name)
        if outcome.restart_s is None and record and record.pid != old_pid:
            outcome.restart_s = time.monotonic() - killed_at
            whole_from = datetime.now(UTC) + timedelta(minutes=1)
        if whole_from is not None:
            try:
                check = check_view(rest_url, home / "lake", symbols, since, newer_than=whole_from)
            except Exception as exc:  # the exchange or the lake is being restarted or rewritten; look again
                outcome.problems = [f"{type(exc).__name__}: {str(exc)[:160]}"]
            else:
                outcome.missing_minutes = max(outcome.missing_minutes, check.missing_minutes)
                outcome.problems = check.problems
                if check.whole:
                    outcome.whole_after_s = time.monotonic() - killed_at
                    break
        time.sleep(5)
    return outcome
