"""The process supervisor behind ``crypto-assets up`` and ``down``, with real child processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crypto_assets.serving.component_logs import clean_line, log_tail, rotated
from crypto_assets.serving.processes import (
    free_port,
    pid_alive,
    port_open,
    read_process_records,
)
from crypto_assets.serving.supervisor import Service, StartError, Supervisor
from crypto_assets.serving.system import stop_recorded
from crypto_assets.settings import LogsSettings


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


@pytest.mark.integration  # supervised child processes
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


@pytest.mark.integration  # a supervised child process
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


@pytest.mark.integration  # child processes
def test_down_stops_the_processes_in_the_pid_files(tmp_path):
    supervisor = Supervisor(tmp_path, dict(os.environ), lambda _: None)
    port = free_port()
    supervisor.start(Service("web", http_server(port), [port]))
    pid = supervisor.children[0].process.pid
    # As if `up` had been killed outright: its children and their pid files remain.
    assert stop_recorded(tmp_path, grace=10, echo=lambda _: None) == 0
    supervisor.children[0].process.wait(10)
    assert not pid_alive(pid) and read_process_records(tmp_path) == {}


@pytest.mark.integration  # crypto-assets up in a subprocess
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


@pytest.mark.parametrize(
    ("line", "cleaned"),
    [
        ("\x1b[32m2024-05-01 INFO\x1b[0m - started", "2024-05-01 INFO - started"),
        ("\x1b]0;a window title\x07text after it", "text after it"),
        ("[Stage 3:====>   (1 + 1) / 2]", None),
        ("[Stage 0:>     (0 + 1) / 1][Stage 1:>     (0 + 0) / 1]", None),
        ("[Stage 12:=======>  (3 + 1) / 8", None),  # cut short where a long line was split
        (
            "\r[Stage 3:=>  (0 + 1) / 2]\r[Stage 3:====> (1 + 1) / 2]\r" + " " * 30 + "\rWARN after the bar",
            "WARN after the bar",
        ),
        ("\r[Stage 3:=>  (0 + 1) / 2]\r[Stage 3:====> (1 + 1) / 2]", None),
        ("\r      \r", None),
        ("a line ending in CR LF\r", "a line ending in CR LF"),
        ("", ""),  # a blank line stays
        ("finished [Stage 3] in 2 s", "finished [Stage 3] in 2 s"),
    ],
)
def test_a_line_is_cleaned_of_colour_codes_and_progress_bars(line, cleaned):
    assert clean_line(line) == cleaned


def test_the_tail_of_a_log_reaches_into_the_rotated_file(tmp_path):
    log = tmp_path / "x.log"
    rotated(log, 1).write_text("".join(f"old {i}\n" for i in range(10)))
    log.write_text("new 0\nnew 1\n")
    assert log_tail(log, 4).splitlines() == ["old 8", "old 9", "new 0", "new 1"]
    assert log_tail(log, 1) == "new 1"
    assert log_tail(tmp_path / "missing.log") == ""


# Numbered lines with colour codes and Spark progress bars in between, then "ready"; the runs are counted in a
# file. A restarted run writes fewer lines (so the window keeps the end of the first) and waits for a file "go"
# before it says it is ready.
NUMBERED_LINES, RESTARTED_LINES = 400, 50
CHATTY = f"""
    import pathlib, sys, time
    runs = pathlib.Path(sys.argv[1]) / "runs"
    run = len(runs.read_text()) if runs.exists() else 0
    runs.write_text("x" * (run + 1))
    for i in range({RESTARTED_LINES} if run else {NUMBERED_LINES}):
        print(f"\\x1b[32mrun {{run}} line {{i:04d}}\\x1b[0m " + "." * 60, flush=True)
        if i % 50 == 0:
            sys.stdout.write("\\r[Stage 3:=>   (0 + 1) / 2]\\r[Stage 3:====> (1 + 1) / 2]\\r" + " " * 40 + "\\r")
            sys.stdout.flush()
        if i % 97 == 0:
            print("[Stage 7:>     (0 + 1) / 4]", flush=True)
    while run and not (runs.parent / "go").exists():
        time.sleep(0.05)
    print(f"ready {{run}}", flush=True)
    time.sleep(600)
"""
NUMBERED = re.compile(r"run (\d+) line (\d{4}) \.{60}")


def kept_lines(log: Path, backups: int) -> list[str]:
    """The lines of the log's window, oldest first; checks the files' count and sizes on the way."""
    files = [rotated(log, i) for i in range(backups, 0, -1)] + [log]
    assert all(f.exists() for f in files) and not rotated(log, backups + 1).exists()
    lines = []
    for path in files:
        data = path.read_bytes()
        assert len(data) <= 4000, f"{path.name} has {len(data)} bytes"
        assert b"\x1b" not in data and b"\r" not in data, path.name  # numbered() checks for progress bars
        lines += data.decode().splitlines()
    return lines


def numbered(lines: list[str]) -> list[tuple[int, int]]:
    """(run, line) of every numbered line; any other line must be a start header, "ready" or blank."""
    found = []
    for line in lines:
        match = NUMBERED.fullmatch(line)
        if match:
            found.append((int(match[1]), int(match[2])))
        else:
            assert line == "" or line.startswith("--- ") or re.fullmatch(r"ready \d", line), repr(line)
    return found


@pytest.mark.integration  # a supervised child process writing the log
def test_a_log_rotates_by_size_keeps_every_line_whole_and_a_restart_appends_to_it(tmp_path):
    backups = 3
    supervisor = Supervisor(tmp_path, dict(os.environ), lambda _: None, LogsSettings(max_bytes=4000, backups=backups))
    service = Service("chatty", [*python(CHATTY), str(tmp_path)], ready_text="ready", ready_timeout=60)
    log = supervisor.log_path("chatty")
    everything = [(0, i) for i in range(NUMBERED_LINES)] + [(1, i) for i in range(RESTARTED_LINES)]
    try:
        # "ready" comes after the log rotated many times, and is still seen.
        supervisor.start(service)
        assert wait_for(lambda: "ready 0" in log.read_text())
        window = numbered(kept_lines(log, backups))
        assert window and window == everything[NUMBERED_LINES - len(window) : NUMBERED_LINES]
        assert read_process_records(tmp_path)["chatty"].log == str(log)

        first = supervisor.children[0].process
        first.kill()
        assert wait_for(lambda: (supervisor.poll(), supervisor.children[0].process.pid != first.pid)[1], timeout=30)
        assert wait_for(lambda: f"run 1 line {RESTARTED_LINES - 1:04d}" in log.read_text())
        # The new run has not said "ready" yet: the first run's doing so does not count for it.
        assert not supervisor._said(service)
        (tmp_path / "go").touch()
        assert wait_for(lambda: supervisor._said(service))
        assert wait_for(lambda: "ready 1" in log.read_text())
        # The same window goes on across the restart: the first run's end, the restart's header, the new lines.
        lines = kept_lines(log, backups)
        window = numbered(lines)
        assert window[0][0] == 0 and window == everything[len(everything) - len(window) :]
        header = max(i for i, line in enumerate(lines) if line.startswith("--- "))
        assert lines[header - 3 : header] == [f"run 0 line {NUMBERED_LINES - 1:04d} " + "." * 60, "ready 0", ""]
        assert NUMBERED.fullmatch(lines[header + 1])[1] == "1"
    finally:
        supervisor.stop_all(grace=10)


SUPERVISOR_THAT_DIES = """
    import os, sys, time
    from pathlib import Path
    from crypto_assets.serving.supervisor import Service, Supervisor
    child = "import time\\nwhile True:\\n    print('still here', flush=True)\\n    time.sleep(0.05)"
    supervisor = Supervisor(Path(sys.argv[1]), dict(os.environ), lambda _: None)
    supervisor.start(Service("writer", [sys.executable, "-c", child], ready_text="still here"))
    print("started", flush=True)
    time.sleep(600)
"""


@pytest.mark.integration  # a supervisor in a subprocess
def test_a_child_still_writing_after_its_supervisor_died_ends_instead_of_hanging(tmp_path):
    supervisor = subprocess.Popen([*python(SUPERVISOR_THAT_DIES), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert supervisor.stdout.readline().strip() == "started"
        writer = read_process_records(tmp_path)["writer"].pid
        assert pid_alive(writer)
        supervisor.kill()
        supervisor.wait()
        # Its pipe has no reader any more: the next write fails (EPIPE) and the child ends.
        assert wait_for(lambda: not pid_alive(writer), timeout=30)
    finally:
        supervisor.kill()
        supervisor.wait()
        for record in read_process_records(tmp_path).values():
            if pid_alive(record.pid):
                os.killpg(record.pid, signal.SIGKILL)
