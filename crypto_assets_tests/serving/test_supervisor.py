"""The process supervisor behind ``crypto-assets up`` and ``down``, with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crypto_assets.serving.processes import (
    free_port,
    pid_alive,
    port_open,
    read_process_records,
)
from crypto_assets.serving.supervisor import Service, StartError, Supervisor
from crypto_assets.serving.system import stop_recorded


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


# A child that leaves a helper in its process group, as servers with code servers or a JVM do.
WITH_HELPER = """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("ready", flush=True)
    time.sleep(600)
"""


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


# Python's own and Dagster's serialized errors (a code server that failed to load).
TRACEBACK_MARKS = ("Traceback (most recent call last)", "Stack Trace:")


def test_children_start_when_ready_get_pid_files_restart_after_a_crash_and_stop_with_their_helpers(tmp_path):
    messages: list[str] = []
    supervisor = Supervisor(tmp_path, dict(os.environ), messages.append)
    port = free_port()
    try:
        supervisor.start(Service("web", http_server(port), [port]))
        assert port_open(port)
        supervisor.start(Service("worker", python(WITH_HELPER), ready_text="ready"))
        records = read_process_records(tmp_path)
        assert set(records) == {"web", "worker"} and records["web"].ports == [port]
        worker = supervisor.children[1].process
        assert wait_for(lambda: len(group_members(worker.pid)) == 2)

        # A crash is followed by a restart with a fresh pid file.
        web = supervisor.children[0].process
        os.kill(web.pid, signal.SIGKILL)
        assert wait_for(lambda: (supervisor.poll(), supervisor.children[0].process.pid != web.pid)[1], timeout=30)
        assert wait_for(lambda: port_open(port))
        assert read_process_records(tmp_path)["web"].pid == supervisor.children[0].process.pid
        assert any("web exited" in m for m in messages) and any("restarted web" in m for m in messages)
    finally:
        supervisor.stop_all(grace=10)
    assert not group_members(worker.pid), "the worker's helper must be stopped with it"
    assert not port_open(port) and read_process_records(tmp_path) == {}


def test_a_child_that_dies_while_starting_fails_with_its_log(tmp_path):
    supervisor = Supervisor(tmp_path, dict(os.environ), lambda _: None)
    try:
        with pytest.raises(StartError, match="(?s)exited with code 3.*broken on purpose"):
            supervisor.start(
                Service(
                    "bad", python("import sys; print('broken on purpose', flush=True); sys.exit(3)"), ready_text="never"
                )
            )
    finally:
        supervisor.stop_all(grace=5)


def test_down_stops_the_processes_in_the_pid_files(tmp_path):
    supervisor = Supervisor(tmp_path, dict(os.environ), lambda _: None)
    port = free_port()
    supervisor.start(Service("web", http_server(port), [port]))
    pid = supervisor.children[0].process.pid
    # As if `up` had been killed outright: its children and their pid files remain.
    assert stop_recorded(tmp_path, grace=10, echo=lambda _: None) == 0
    supervisor.children[0].process.wait(10)
    assert not pid_alive(pid) and read_process_records(tmp_path) == {}


def test_up_stops_every_child_on_sigterm(tmp_path, project_home):
    """``crypto-assets up`` with only the replay exchange: pid files while running, none after SIGTERM."""
    home = project_home()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crypto_assets.cli",
                "--home",
                str(home),
                "up",
                "--no-speed",
                "--skip-batch",
                "--port",
                str(free_port()),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        assert wait_for(lambda: "dagster-daemon" in read_process_records(home), timeout=150), log.read_text()
        records = read_process_records(home)
        assert {"up", "exchange-replay", "code-server", "dagster-webserver", "dagster-daemon"} <= set(records)
        assert all(pid_alive(r.pid) for r in records.values())
        # Stop right after the daemon started, while it is still loading the workspace from the code server.
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
    output = log.read_text()
    assert up.returncode == 0, output
    assert "SIGTERM: stopping" in output and output.rstrip().endswith("stopped")
    assert not any(pid_alive(r.pid) for r in records.values())
    assert read_process_records(home) == {}
    # A normal stop leaves no traceback in any component's log (the daemon's code server may still be importing).
    for path in (home / "logs").glob("*.log"):
        text = path.read_text(errors="replace")
        assert not any(mark in text for mark in TRACEBACK_MARKS), f"{path.name}:\n{text[-3000:]}"
