"""``crypto-assets up``: the whole system on one machine, on the embedded defaults.

Order: the replay exchange (the synthetic market continuing to now) and the Kafka-compatible broker, then the
producer and the Spark stream (so the speed layer already records while the batch graph is materialized),
then the batch and forecast graphs, then Dagster: one code server for the code location, and the webserver
and the daemon (``dagster-daemon run``) that both load it through the same ``workspace.yaml``. With the code
server started once and supervised here, neither of them spawns code servers of its own that would shut down,
and warn, whenever a heartbeat is missed. Every component is started by its own command and shares the
project settings through the environment (``CRYPTO_ASSETS_<SECTION>_<FIELD>``), so each finds the others'
ports. A line on the console marks each milestone, the last one the first materialized ``unified_view``.
A daemon that hangs rather than exits is killed and restarted once it sends no heartbeat for
``[serving] daemon_stall_seconds`` (:mod:`daemon_watch`), so Dagster's freshness evaluation never stops unnoticed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from crypto_assets.asset_names import UNIFIED_VIEW
from crypto_assets.dagster_home import write_workspace_yaml
from crypto_assets.serving.daemon_watch import DaemonWatchdog
from crypto_assets.serving.processes import (
    ProcessRecord,
    free_port,
    pid_alive,
    port_open,
    read_process_records,
    remove_record,
    write_record,
)
from crypto_assets.serving.supervisor import Service, StartError, Supervisor
from crypto_assets.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
DEFINITIONS_MODULE = "crypto_assets.definitions"
LOCATION_NAME = "crypto_assets"


@dataclass
class Plan:
    """Which components run and on which ports; None means the configured external service is used."""

    dagster_port: int
    exchange_ports: tuple[int, int] | None  # REST, WebSocket of the replay exchange
    broker_port: int | None
    materialize: bool = True
    speed_layer: bool = True
    reports_port: int | None = None  # the forecast reports server, linked from the UI
    code_server_port: int = 0  # the code location's gRPC server, shared by the webserver and the daemon


def plan_for(settings: Settings, dagster_port: int, exchange: str, materialize: bool, speed_layer: bool = True) -> Plan:
    """The replay exchange unless ``exchange == "configured"``; the embedded broker unless the configured
    bootstrap servers are remote. Ports that are taken are replaced by free ones."""
    exchange_ports = None if exchange == "configured" else (free_port(), free_port())
    bootstrap = settings.kafka.bootstrap_servers.split(",")[0]
    host = urlparse(f"tcp://{bootstrap}").hostname
    broker_port = None
    if host in LOCAL_HOSTS:
        broker_port = settings.kafka.broker_port
        if port_open(broker_port):
            broker_port = free_port()
    reports_port = settings.serving.reports_port
    if port_open(reports_port):
        reports_port = free_port()
    return Plan(dagster_port, exchange_ports, broker_port, materialize, speed_layer, reports_port, free_port())


def environment(settings: Settings, plan: Plan, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env["CRYPTO_ASSETS_HOME"] = str(settings.home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if plan.exchange_ports:
        rest, ws = plan.exchange_ports
        env["CRYPTO_ASSETS_EXCHANGE_REST_URL"] = f"http://127.0.0.1:{rest}"
        env["CRYPTO_ASSETS_EXCHANGE_WS_URL"] = f"ws://127.0.0.1:{ws}"
    if plan.broker_port:
        env["CRYPTO_ASSETS_KAFKA_BROKER_PORT"] = str(plan.broker_port)
        env["CRYPTO_ASSETS_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{plan.broker_port}"
    if plan.reports_port:
        env["CRYPTO_ASSETS_SERVING_REPORTS_PORT"] = str(plan.reports_port)
    return env


def cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "crypto_assets.cli", "--home", str(home), *args]


def speed_services(home: Path, plan: Plan) -> list[Service]:
    services = []
    if plan.exchange_ports:
        rest, ws = plan.exchange_ports
        argv = cli(home, "exchange-replay", "--port", str(rest), "--ws-port", str(ws))
        services.append(Service("exchange-replay", argv, [rest, ws], ready_text="REST http"))
    if plan.speed_layer:
        if plan.broker_port:
            # The broker prints its line once the topics exist, so the producer never writes to a missing topic.
            services.append(
                Service("broker", cli(home, "broker"), [plan.broker_port], ready_text="Kafka-compatible broker")
            )
        services.append(Service("producer", cli(home, "produce"), ready_text="streaming", settle_seconds=3.0))
        services.append(Service("stream", cli(home, "stream"), ready_text="streaming Kafka"))
    return services


def entry_point(name: str) -> str:
    """A console script of this environment (``dagster-daemon``, ``dagster-webserver``), found beside the
    running Python first, so ``up`` works from a virtualenv that is not on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def dagster_services(home: Path, plan: Plan, dagster_home: Path) -> list[Service]:
    """The reports server, then Dagster: the code server of the location, and the webserver and the daemon
    that both reach it through one workspace.yaml (``-w``)."""
    workspace = write_workspace_yaml(dagster_home, "127.0.0.1", plan.code_server_port, LOCATION_NAME)
    reports = [Service("reports", cli(home, "reports"), [plan.reports_port])] if plan.reports_port else []
    code_server = [
        entry_point("dagster"),
        "code-server",
        "start",
        "-h",
        "127.0.0.1",
        "-p",
        str(plan.code_server_port),
        "-m",
        DEFINITIONS_MODULE,
        "--location-name",
        LOCATION_NAME,
        "--use-python-environment-entry-point",
    ]
    webserver = [
        entry_point("dagster-webserver"),
        "-h",
        "127.0.0.1",
        "-p",
        str(plan.dagster_port),
        "-w",
        str(workspace),
    ]
    return reports + [
        Service("code-server", code_server, [plan.code_server_port]),
        Service("dagster-webserver", webserver, [plan.dagster_port]),
        # The daemon has no port; it logs this line once its daemons (scheduler, sensors, backfills, run queue) run.
        Service(
            "dagster-daemon",
            [entry_point("dagster-daemon"), "run", "-w", str(workspace)],
            ready_text="Instance is configured with the following daemons",
            settle_seconds=5.0,
        ),
    ]


def first_unified_view(dagster_home: Path) -> str | None:
    """The partitions of the newest ``unified_view`` materialization, once there is one."""
    from dagster import AssetKey, DagsterInstance

    try:
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            event = instance.get_latest_materialization_event(AssetKey(UNIFIED_VIEW))
            if event is None:
                return None
            partitions = sorted(instance.get_materialized_partitions(AssetKey(UNIFIED_VIEW)))
            return ", ".join(partitions) or "all"
    except Exception:  # the instance's storage may be mid-migration or locked; look again on the next poll
        return None


class Stop(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException, so no ``except Exception`` on the way swallows it)."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def run_system(settings: Settings, plan: Plan, echo=print) -> int:
    """Bring everything up, supervise until SIGTERM/SIGINT, then stop it all. Returns the exit code."""
    home = settings.home
    running = read_process_records(home).get("up")
    if running and pid_alive(running.pid) and running.pid != os.getpid():
        echo(f"error: the system is already running for {home} (pid {running.pid}); `crypto-assets down` stops it")
        return 1
    env = environment(settings, plan, dict(os.environ))
    supervisor = Supervisor(home, env, echo, settings.logs)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    write_record(
        home, ProcessRecord("up", os.getpid(), datetime.now(UTC).isoformat(timespec="seconds"), command=sys.argv)
    )
    code = 0
    began = time.monotonic()

    def milestone(text: str) -> None:
        echo(f"[{time.monotonic() - began:5.0f}s] {text}")

    try:
        for service in speed_services(home, plan):
            supervisor.start(service)
        if plan.speed_layer:
            milestone("speed layer recording: exchange -> broker -> producer -> Spark stream")
        if plan.materialize:
            milestone("materializing the batch graph, then the forecast graph per symbol (crypto-assets demo)")
            if supervisor.run_once("batch graph", cli(home, "demo")) != 0:
                echo(
                    "the batch or forecast run did not succeed; the system keeps running (see the runs in the Dagster UI)"
                )
            milestone("batch and forecast graphs done")
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster")
        for service in dagster_services(home, plan, dagster_home):
            supervisor.start(service)
        ui = f"http://127.0.0.1:{plan.dagster_port}"
        milestone(
            f"Dagster UI on {ui}; the sensor refreshes unified_view at most every "
            f"{settings.serving.sensor_min_interval_seconds}s when micro-batches land. "
            "`crypto-assets status` shows the components; Ctrl-C stops everything."
        )
        watchdog = DaemonWatchdog(plan.dagster_port, settings.serving.daemon_stall_seconds, echo)
        view_seen = not plan.speed_layer  # without the stream only a batch run or the UI materializes the view
        next_look = 0.0
        while True:
            supervisor.poll()
            watchdog.check(supervisor)
            if not view_seen and time.monotonic() >= next_look:
                next_look = time.monotonic() + 5.0
                first = first_unified_view(dagster_home)
                if first:
                    view_seen = True
                    milestone(f"unified_view materialized ({first}): {ui}/assets/unified_view")
            time.sleep(1.0)
    except Stop as stop:
        echo(f"\n{stop.args[0]}: stopping")
    except StartError as exc:
        echo(f"error: {exc}")
        code = 1
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the clean stop short
            signal.signal(sig, signal.SIG_IGN)
        supervisor.stop_all()
        remove_record(home, "up")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo("stopped")
    return code


def stop_recorded(home: Path, grace: float = 30.0, echo=print) -> int:
    """Stop a system from its pid files: ask ``up`` to stop (it stops its children), else stop each child."""
    records = read_process_records(home)
    up = records.pop("up", None)
    targets = (
        [(up.name, up.pid, False)] if up and pid_alive(up.pid) else [(r.name, r.pid, True) for r in records.values()]
    )
    if not targets:
        echo("nothing is running")
    for name, pid, whole_group in targets:
        if not pid_alive(pid):
            remove_record(home, name)
            continue
        echo(f"stopping {name} (pid {pid})")
        try:
            os.killpg(pid, signal.SIGTERM) if whole_group else os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    code = 0
    for name, pid, whole_group in targets:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            echo(f"{name} (pid {pid}) did not stop within {grace:.0f}s; killing it")
            try:
                os.killpg(pid, signal.SIGKILL) if whole_group else os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = 1
        remove_record(home, name)
    return code
