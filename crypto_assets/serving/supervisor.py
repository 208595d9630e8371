"""Start, watch and stop the processes of the local system for ``crypto-assets up``.

Each child runs in its own process group with a pid file in ``<home>/run`` (read by ``crypto-assets status``)
and its output piped into ``<home>/logs/<name>.log``, which rotates by size (:mod:`component_logs`). A child
that dies is restarted with a growing delay; one that keeps dying stops the whole system. Stopping goes in
reverse start order, each child fully before the next: SIGTERM to the child itself, so it stops its own helpers
in order (the Dagster daemon waits for a code server still importing instead of interrupting it mid-import),
then SIGTERM to whatever its group left behind, and SIGKILL to the group after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crypto_assets.serving.component_logs import LogPump, RotatingLog, log_tail
from crypto_assets.serving.processes import (
    ProcessRecord,
    port_open,
    remove_record,
    write_record,
)
from crypto_assets.settings import LogsSettings

MAX_RESTARTS = 5  # within RESTART_WINDOW seconds, after which the system stops
RESTART_WINDOW = 300.0
PUMP_DRAIN_SECONDS = 10.0  # for a child's last output to reach its log once it exited


class StartError(RuntimeError):
    """A child did not come up; the message carries the end of its log."""


@dataclass
class Service:
    name: str
    argv: list[str]
    ports: list[int] = field(default_factory=list)  # answering on all of these means ready
    ready_text: str | None = None  # ...and having written this to its log means ready
    ready_timeout: float = 180.0
    settle_seconds: float = 2.0  # a child with neither counts as started once it survives this long

    @property
    def has_ready_signal(self) -> bool:
        return bool(self.ports or self.ready_text)


@dataclass
class Running:
    service: Service
    process: subprocess.Popen
    started: float
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        home: Path,
        env: Mapping[str, str],
        echo: Callable[[str], None] = print,
        log_settings: LogsSettings | None = None,
    ):
        self.home = home
        self.env = dict(env)
        self.echo = echo
        self.logs = home / "logs"
        self.log_settings = log_settings or LogsSettings()
        self.children: list[Running] = []
        self.log_files: dict[str, RotatingLog] = {}  # one per child, shared by its runs
        self.pumps: dict[str, list[LogPump]] = {}  # per child, its current run's last

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _log_file(self, name: str) -> RotatingLog:
        if name not in self.log_files:
            settings = self.log_settings
            self.log_files[name] = RotatingLog(self.log_path(name), settings.max_bytes, settings.backups)
        return self.log_files[name]

    def _spawn(self, service: Service) -> subprocess.Popen:
        log = self._log_file(service.name)
        command = " ".join(service.argv).replace("\n", "\\n")  # one line, even for a `python -c` script
        log.write(f"\n--- {datetime.now(UTC).isoformat()} starting: {command}\n")
        process = subprocess.Popen(
            service.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # Pumps of earlier runs that have finished draining are done with; the current one is kept last.
        earlier = [pump for pump in self.pumps.get(service.name, []) if pump.running]
        self.pumps[service.name] = [*earlier, LogPump(service.name, process.stdout, log, service.ready_text)]
        write_record(
            self.home,
            ProcessRecord(
                service.name,
                process.pid,
                datetime.now(UTC).isoformat(timespec="seconds"),
                service.ports,
                service.argv,
                str(self.log_path(service.name)),
            ),
        )
        return process

    def _said(self, service: Service) -> bool:
        """Whether the current run wrote its ready text (earlier runs' output does not count)."""
        return self.pumps[service.name][-1].said_ready.is_set()

    def _drain(self, name: str) -> None:
        """Let the pumps copy what an exited child wrote last; a helper that inherited its output and lives
        on would keep a pump open, so this waits a bounded time."""
        deadline = time.monotonic() + PUMP_DRAIN_SECONDS
        for pump in self.pumps.get(name, []):
            pump.join(max(0.0, deadline - time.monotonic()))

    def _tail(self, name: str, exited: bool = True) -> str:
        if exited:
            self._drain(name)
        return f"end of {self.log_path(name)}:\n{log_tail(self.log_path(name))}"

    def _ready(self, service: Service) -> bool:
        ports_ok = all(port_open(p) for p in service.ports)
        return ports_ok and (service.ready_text is None or self._said(service))

    def _wait_ready(self, service: Service, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + (service.ready_timeout if service.has_ready_signal else service.settle_seconds)
        while True:
            if process.poll() is not None:
                raise StartError(
                    f"{service.name} exited with code {process.returncode} while starting; {self._tail(service.name)}"
                )
            if service.has_ready_signal and self._ready(service):
                return
            if time.monotonic() >= deadline:
                if not service.has_ready_signal:
                    return
                raise StartError(
                    f"{service.name} was not ready within {service.ready_timeout:.0f}s; {self._tail(service.name, exited=False)}"
                )
            time.sleep(0.2)

    def start(self, service: Service) -> None:
        self.echo(f"starting {service.name} (log {self.log_path(service.name)})")
        process = self._spawn(service)
        running = Running(service, process, time.monotonic())
        self.children.append(running)
        self._wait_ready(service, process)
        ports = f" on 127.0.0.1:{', '.join(str(p) for p in service.ports)}" if service.ports else ""
        self.echo(f"  {service.name} is up{ports} (pid {process.pid})")

    def run_once(self, name: str, argv: list[str]) -> int:
        """Run a one-off child to completion (its output goes to the console), supervising the others
        meanwhile; it is stopped with the rest if the system is stopped first."""
        process = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while process.poll() is None:
                self.poll()
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                self.echo(f"stopping {name} (pid {process.pid})")
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
        return process.returncode

    def poll(self) -> None:
        """Restart children that died; raise StartError when one keeps dying."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    child.process = self._spawn(child.service)
                    child.started = now
                    self.echo(f"restarted {child.service.name} (pid {child.process.pid})")
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.crashes = [t for t in child.crashes if now - t < RESTART_WINDOW] + [now]
            if len(child.crashes) > MAX_RESTARTS:
                raise StartError(
                    f"{child.service.name} exited {len(child.crashes)} times within {RESTART_WINDOW:.0f}s; "
                    f"{self._tail(child.service.name)}"
                )
            delay = min(2 ** (len(child.crashes) - 1), 30)
            child.restart_at = now + delay
            self.echo(f"{child.service.name} exited with code {code}; restarting in {delay}s")

    def child(self, name: str) -> Running | None:
        return next((child for child in self.children if child.service.name == name), None)

    def kill(self, name: str) -> None:
        """SIGKILL a hung child's process group; the next :meth:`poll` sees it exit and restarts it like any
        crash (same delays, same limit)."""
        child = self.child(name)
        if child is not None:
            _signal_group(child.process, signal.SIGKILL)

    def stop_all(self, grace: float = 20.0) -> None:
        """Stop in reverse start order, each fully before the next, so e.g. the stream finishes its micro-batch
        while the broker is still there."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                self.echo(f"stopping {child.service.name} (pid {child.process.pid})")
            deadline = time.monotonic() + grace
            _signal_leader(child.process, signal.SIGTERM)
            while child.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            # Then the whole group: helpers (code servers) a server left behind stop after it.
            _signal_group(child.process, signal.SIGTERM)
            while _group_alive(child.process) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(child.process):
                self.echo(f"{child.service.name} did not stop within {grace:.0f}s; killing it")
                _signal_group(child.process, signal.SIGKILL)
            child.process.wait()
            self._drain(child.service.name)  # its last lines, e.g. a traceback from the stop, reach the log
            remove_record(self.home, child.service.name)
        self.children.clear()


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader, so a finished leader does not keep its group "alive" as a zombie
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_leader(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
