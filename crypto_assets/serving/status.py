"""``crypto-assets status``: which components run, how fresh each layer is, and the lag behind now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from crypto_assets.asset_names import MINUTE_RAW, UNIFIED_VIEW
from crypto_assets.batch.pipeline import latest_date
from crypto_assets.lake.location import read_parquet
from crypto_assets.lake.microbatch_log import read_records_tail
from crypto_assets.quality import MAX_LISTED
from crypto_assets.serving.daemon_watch import heartbeats, newest_heartbeat
from crypto_assets.serving.processes import pid_alive, port_open, read_process_records
from crypto_assets.serving.store import (
    month_files,
    read_batch_view,
    view_file,
    written_at,
)
from crypto_assets.serving.unified import SPEED, seam_of
from crypto_assets.settings import Settings

COMPONENTS = (
    "exchange-replay",
    "broker",
    "producer",
    "stream",
    "reports",
    "code-server",
    "dagster-webserver",
    "dagster-daemon",
)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class ComponentState:
    name: str
    state: str  # running | not answering | stopped | not started
    pid: int | None = None
    ports: tuple[int, ...] = ()
    since: str | None = None
    note: str = ""


def _local_port(url_or_hostport: str) -> int | None:
    parsed = urlparse(url_or_hostport if "://" in url_or_hostport else f"tcp://{url_or_hostport}")
    return parsed.port if parsed.hostname in LOCAL_HOSTS else None


def fallback_ports(settings: Settings) -> dict[str, int | None]:
    """Where a component would listen when it was started by hand rather than by ``up``."""
    return {
        "broker": _local_port(settings.kafka.bootstrap_servers.split(",")[0]),
        "exchange-replay": _local_port(settings.exchange.rest_url),
        "reports": settings.serving.reports_port,
    }


def component_states(settings: Settings) -> list[ComponentState]:
    records = read_process_records(settings.home)
    states = []
    for name in ("up", *COMPONENTS):
        record = records.get(name)
        if record is not None:
            alive = pid_alive(record.pid)
            answering = all(port_open(p) for p in record.ports)
            state = "stopped" if not alive else ("running" if answering else "not answering")
            note = "stale pid file" if not alive else ""
            states.append(ComponentState(name, state, record.pid, tuple(record.ports), record.started_at, note))
            continue
        port = fallback_ports(settings).get(name)
        if port and port_open(port):
            states.append(ComponentState(name, "running", None, (port,), None, "started outside `up`"))
        elif name != "up":
            # A component that has a log ran before and was stopped (``down`` removes the pid files, not logs).
            ran = (settings.home / "logs" / f"{name}.log").exists()
            states.append(ComponentState(name, "stopped" if ran else "not started", None, (port,) if port else ()))
    return states


def daemon_heartbeat(settings: Settings, now: datetime | None = None) -> dict | None:
    """The Dagster daemon's newest heartbeat, from the webserver ``up`` started; None when it does not answer.
    Stale past ``[serving] daemon_stall_seconds``: the daemon hangs (or is down), so freshness is not evaluated."""
    webserver = read_process_records(settings.home).get("dagster-webserver")
    beats = heartbeats(webserver.ports[0], timeout=3.0) if webserver and webserver.ports else None
    if beats is None:
        return None
    now = now or datetime.now(UTC)
    newest = newest_heartbeat(beats)
    at = datetime.fromtimestamp(newest, UTC) if newest is not None else None
    age = _seconds(now, at)
    bound = settings.serving.daemon_stall_seconds
    return {
        "last_heartbeat": at.isoformat(timespec="seconds") if at else None,
        "age_seconds": age,
        "stall_bound_seconds": bound,
        "stale": bool(bound) and (age is None or age > bound),
    }


def _seconds(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def layer_freshness(settings: Settings, now: datetime | None = None) -> dict:
    """Newest data of each layer per symbol and how far each is behind ``now``."""
    now = now or datetime.now(UTC)
    lake = settings.lake_dir
    symbols = {}
    for symbol in settings.symbol_names:
        minute = latest_date(lake, MINUTE_RAW, symbol, "open_time") if month_files(lake, MINUTE_RAW, symbol) else None
        seam = seam_of(read_batch_view(lake, symbol))
        view = {}
        path = view_file(lake, symbol)
        if path.is_file():
            frame = read_parquet(path, columns=["date", "source", "as_of"])
            as_of = frame["as_of"].max()
            view = {
                "materialized_at": written_at(path).isoformat(),
                "as_of": as_of.isoformat() if as_of else None,
                "lag_seconds": _seconds(now, as_of),
                "last_day": str(frame["date"].max()) if frame.height else None,
                "speed_days": int((frame["source"] == SPEED).sum()),
            }
        symbols[symbol] = {
            "batch_latest_minute": minute.isoformat() if minute else None,
            "batch_lag_seconds": _seconds(now, minute),
            "batch_closed_through": str(seam) if seam else None,
            UNIFIED_VIEW: view,
        }
    tail = read_records_tail(lake)
    speed = {}
    if tail:
        last = tail[-1]
        newest_event = datetime.fromisoformat(last.max_event_time) if last.max_event_time else None
        speed = {
            "latest_batch_id": last.batch_id,
            "committed_at": last.committed_at,
            "newest_event": last.max_event_time,
            "lag_seconds": _seconds(now, newest_event),
            "commit_age_seconds": _seconds(now, datetime.fromisoformat(last.committed_at)),
        }
    return {"now": now.isoformat(), "speed": speed, "symbols": symbols}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def heartbeat_line(daemon: dict) -> str:
    heard = f"last heartbeat {_age(daemon['age_seconds'])} ago" if daemon["last_heartbeat"] else "no heartbeat yet"
    if not daemon["stale"]:
        return heard
    return f"{heard}: STALE (over {daemon['stall_bound_seconds']} s): it hangs or is down; freshness is not evaluated"


def render_status(components: list[ComponentState], freshness: dict, home: Path, daemon: dict | None = None) -> str:
    lines = [f"home {home}", "", "components"]
    for c in components:
        ports = ",".join(str(p) for p in c.ports) or "-"
        lines.append(
            f"  {c.name:<18} {c.state:<14} pid {c.pid or '-':<8} port {ports:<12} {('since ' + c.since) if c.since else ''}"
            f"{('  (' + c.note + ')') if c.note else ''}".rstrip()
        )
        if c.name == "dagster-daemon" and daemon is not None:
            lines.append(f"  {'':<18} {heartbeat_line(daemon)}")
    speed = freshness["speed"]
    lines += ["", "speed layer"]
    if speed:
        lines.append(
            f"  latest micro-batch {speed['latest_batch_id']} committed {speed['committed_at']}, newest event "
            f"{speed['newest_event']}; lag {_age(speed['lag_seconds'])}"
        )
    else:
        lines.append("  no micro-batch logged yet")
    lines += ["", "batch layer and unified view"]
    symbols = list(freshness["symbols"].items())
    if len(symbols) > MAX_LISTED:
        # The symbols furthest behind first (nothing stored counts as furthest); --json lists every one.
        symbols.sort(key=lambda item: -(item[1]["batch_lag_seconds"] or float("inf")))
        lines.append(f"  {len(symbols)} symbols, the {MAX_LISTED} furthest behind first")
    for symbol, info in symbols[:MAX_LISTED]:
        lines.append(
            f"  {symbol}: minute_raw up to {info['batch_latest_minute'] or 'nothing'} (lag {_age(info['batch_lag_seconds'])}); "
            f"closed through {info['batch_closed_through'] or 'no day'}"
        )
        view = info[UNIFIED_VIEW]
        if view:
            lines.append(
                f"  {' ' * len(symbol)}  unified_view as of {view['as_of']} (lag {_age(view['lag_seconds'])}), "
                f"last day {view['last_day']}, {view['speed_days']} day(s) from the speed layer, "
                f"materialized {view['materialized_at']}"
            )
        else:
            lines.append(f"  {' ' * len(symbol)}  unified_view not materialized yet")
    if len(symbols) > MAX_LISTED:
        lines.append(f"  … and {len(symbols) - MAX_LISTED} more (crypto-assets status --json lists every symbol)")
    return "\n".join(lines) + "\n"
