"""The watchdog that restarts a hung Dagster daemon: the verdict on tiny inputs, its kill going through the
supervisor's crash path with real child processes, and the bound's validation."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from datetime import datetime

import pytest

from crypto_assets.serving.daemon_watch import DAEMON, DaemonWatchdog, Heartbeat, heartbeats, must_restart, silence
from crypto_assets.serving.processes import free_port, pid_alive, read_process_records
from crypto_assets.serving.status import heartbeat_line
from crypto_assets.serving.supervisor import Service, Supervisor
from crypto_assets.settings import load_settings
from crypto_assets.validation import SettingsError
from crypto_assets_tests.serving.up_process import running_up, wait_for

NOW = 10_000.0
BOUND = 180.0


def beats(*times: float | None, required: bool = True) -> list[Heartbeat]:
    return [Heartbeat(f"D{i}", required, at) for i, at in enumerate(times)]


@pytest.mark.parametrize(
    ("heard", "started_at", "restart"),
    [
        (beats(NOW - 20), NOW - 3600, False),  # beating
        (beats(NOW - 200), NOW - 3600, True),  # silent longer than the bound
        (beats(NOW - 180), NOW - 3600, False),  # exactly the bound is not past it
        (beats(NOW - 5000, NOW - 30), NOW - 3600, False),  # one slow thread: the newest counts
        (beats(NOW - 5000), NOW - 60, False),  # an earlier run's heartbeat, a fresh start: grace
        (beats(None, None), NOW - 60, False),  # not beaten yet, within its grace
        (beats(None, None), NOW - 200, True),  # never beat since its start
        ([], NOW - 200, True),  # no daemon known at all
        (beats(NOW - 20, required=False) + beats(NOW - 900), NOW - 3600, True),  # optional daemons don't count
    ],
)
def test_a_daemon_is_restarted_only_when_silent_past_the_bound_since_its_newest_heartbeat_or_start(
    heard, started_at, restart
):
    assert must_restart(heard, NOW, started_at, BOUND) is restart


def test_silence_counts_from_the_later_of_the_newest_heartbeat_and_the_start():
    assert silence(beats(NOW - 50, NOW - 400), NOW, NOW - 3600) == 50
    assert silence(beats(NOW - 5000), NOW, NOW - 70) == 70


def test_a_webserver_that_does_not_answer_gives_no_verdict():
    assert heartbeats(free_port(), timeout=1.0) is None


def wait_for_any(condition, seconds: float) -> bool:
    """Whether ``condition`` became true within ``seconds`` (for what must not happen)."""
    try:
        return bool(wait_for(condition, seconds, "", step=0.1))
    except AssertionError:
        return False


SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.mark.integration  # a stand-in daemon process
def test_the_watchdog_kills_a_silent_daemon_and_the_supervisor_restarts_it_as_a_crash(tmp_path):
    messages: list[str] = []
    supervisor = Supervisor(tmp_path, dict(os.environ), messages.append)
    answers: list[list[Heartbeat] | None] = [None]  # the webserver is down at first
    watchdog = DaemonWatchdog(free_port(), bound=1.0, echo=messages.append, read=lambda port: answers[-1])
    try:
        supervisor.start(Service(DAEMON, SLEEPER, settle_seconds=0.5))
        first = read_process_records(tmp_path)[DAEMON].pid

        def watch():
            supervisor.poll()
            watchdog.check(supervisor)
            return read_process_records(tmp_path)[DAEMON].pid != first

        # Past its grace, but nobody answers: no verdict, no restart.
        assert not wait_for_any(watch, 3.0)
        assert pid_alive(first)

        answers.append(beats(None))  # the webserver answers: the daemon never beat
        wait_for(watch, 30, "the watchdog's restart", step=0.1)
        assert not pid_alive(first)
        said = "\n".join(messages)
        assert f"{DAEMON} sent no heartbeat for" in said and f"restarting it (pid {first})" in said
        assert f"{DAEMON} exited with code -9; restarting in 1s" in said  # the crash path's own accounting
        assert len(supervisor.child(DAEMON).crashes) == 1
    finally:
        supervisor.stop_all(grace=5)


def test_status_marks_a_heartbeat_past_the_bound_stale():
    fresh = {"last_heartbeat": "2026-01-01T00:00:00+00:00", "age_seconds": 12.0, "stall_bound_seconds": 180}
    assert heartbeat_line({**fresh, "stale": False}) == "last heartbeat 12.0 s ago"
    line = heartbeat_line({**fresh, "age_seconds": 400.0, "stale": True})
    assert line.startswith("last heartbeat 6.7 min ago: STALE (over 180 s)")


def test_the_stall_bound_is_off_or_longer_than_two_heartbeats(project_home, monkeypatch):
    project_home()
    assert load_settings().serving.daemon_stall_seconds == 180
    monkeypatch.setenv("CRYPTO_ASSETS_SERVING_DAEMON_STALL_SECONDS", "0")
    assert load_settings().serving.daemon_stall_seconds == 0
    monkeypatch.setenv("CRYPTO_ASSETS_SERVING_DAEMON_STALL_SECONDS", "30")
    with pytest.raises(SettingsError, match="serving.daemon_stall_seconds"):
        load_settings()


def daemon_heartbeat(env: dict) -> dict | None:
    """``crypto-assets status --json``'s view of the daemon's heartbeat, as an operator gets it."""
    answer = subprocess.run(
        [sys.executable, "-m", "crypto_assets.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(answer.stdout)["daemon_heartbeat"]


@pytest.mark.slow
def test_up_restarts_a_daemon_hung_by_sigstop_and_its_heartbeat_is_fresh_again(project_home, tmp_path, monkeypatch):
    home = project_home()
    monkeypatch.setenv("CRYPTO_ASSETS_SERVING_DAEMON_STALL_SECONDS", "60")
    log = tmp_path / "up.log"
    with running_up(home, tmp_path / "dagster_home", free_port(), log, args=("--skip-batch", "--no-speed")) as (
        up,
        env,
    ):
        wait_for(lambda: up.poll() is not None or "Dagster UI on" in log.read_text(), 600, "Dagster to start", log)
        assert up.poll() is None, log.read_text()
        wait_for(
            lambda: (beat := daemon_heartbeat(env)) and beat["last_heartbeat"] and not beat["stale"],
            300,
            "the daemon's first heartbeat",
            log,
        )

        hung = read_process_records(home)[DAEMON].pid
        os.killpg(hung, signal.SIGSTOP)  # alive, holding its pid, silent: what a deadlock looks like from outside
        try:
            wait_for(lambda: read_process_records(home)[DAEMON].pid != hung, 600, "up to restart the hung daemon", log)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hung, signal.SIGCONT)
        text = log.read_text()
        assert f"{DAEMON} sent no heartbeat for" in text and f"restarting it (pid {hung})" in text, text
        assert f"{DAEMON} exited with code -9" in text  # the crash path restarted it
        assert not pid_alive(hung)

        # The new daemon beats: the heartbeat status shows is its own (newer than its start) and not stale.
        started = datetime.fromisoformat(read_process_records(home)[DAEMON].started_at)
        beat = wait_for(
            lambda: (
                (beat := daemon_heartbeat(env))
                and beat["last_heartbeat"]
                and datetime.fromisoformat(beat["last_heartbeat"]) >= started
                and beat
            ),
            300,
            "a heartbeat from the restarted daemon",
            log,
        )
        assert not beat["stale"] and beat["stall_bound_seconds"] == 60
        assert up.poll() is None


def test_after_a_suspend_the_daemon_gets_a_new_grace_period_instead_of_a_restart():
    watchdog = DaemonWatchdog(free_port(), bound=180.0)  # checks every 30 s
    watchdog._note_sleep(mono=100.0, wall=1_000.0)
    watchdog._note_sleep(mono=130.0, wall=1_030.0)  # both clocks ran on together
    assert watchdog.awake_since == 0.0
    watchdog._note_sleep(mono=160.0, wall=9_000.0)  # wall time ran on, the monotonic clock did not: slept
    assert watchdog.awake_since == 9_000.0
