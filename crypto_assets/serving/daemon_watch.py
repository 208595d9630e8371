"""The Dagster daemon's heartbeats, read through the webserver's GraphQL API, and the watchdog of ``up``.

A daemon that exits is restarted by the supervisor. One that hangs (stopped, deadlocked) keeps its process, so
nothing restarts it, and its FreshnessDaemon no longer turns stale assets red: the UI stays green and calls the
daemon "Not running" only after Dagster's 30-minute heartbeat tolerance. Dagster's daemons beat every 30 s, so
``up`` asks the webserver for their heartbeats about every 30 s and kills a daemon whose newest heartbeat is
older than ``[serving] daemon_stall_seconds``; the supervisor then restarts it as it restarts a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crypto_assets.serving.webserver import graphql

if TYPE_CHECKING:
    from crypto_assets.serving.supervisor import Supervisor

DAEMON = "dagster-daemon"  # the supervised child's name
DAEMON_HEALTH_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType required lastHeartbeatTime } } } }"
ANSWER_TIMEOUT = 5.0  # seconds; a webserver slower than this is skipped for the round, never waited on
CHECK_EVERY = 30.0  # Dagster's heartbeat interval: looking more often would see nothing new


@dataclass(frozen=True)
class Heartbeat:
    daemon_type: str  # SENSOR, FRESHNESS_DAEMON, ... (the threads of one dagster-daemon process)
    required: bool
    at: float | None  # epoch seconds of its last heartbeat; None before the first


def heartbeats(port: int, timeout: float = ANSWER_TIMEOUT) -> list[Heartbeat] | None:
    """The daemons' last heartbeats as the webserver sees them; None when it does not answer in time."""
    try:
        data = graphql(port, DAEMON_HEALTH_QUERY, timeout=timeout)
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return [Heartbeat(s["daemonType"], bool(s["required"]), s["lastHeartbeatTime"]) for s in statuses]
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None  # down, starting, overloaded or answering oddly: no verdict this round


def newest_heartbeat(beats: Sequence[Heartbeat]) -> float | None:
    """The required daemons' newest heartbeat: they all run in one process, so when none beats, it hangs
    (one slow thread, e.g. a long sensor tick, is Dagster's to warn about, not a reason to restart)."""
    times = [beat.at for beat in beats if beat.required and beat.at is not None]
    return max(times) if times else None


def silence(beats: Sequence[Heartbeat], now: float, started_at: float) -> float:
    """Seconds since the daemon's last sign of life: its newest heartbeat, or its (re)start when that is
    later. So an earlier run's heartbeats do not count against a new one, and each start has the whole bound
    as grace to load the code location and beat."""
    newest = newest_heartbeat(beats)
    return now - max(started_at, newest if newest is not None else started_at)


def must_restart(beats: Sequence[Heartbeat], now: float, started_at: float, bound: float) -> bool:
    return silence(beats, now, started_at) > bound


class DaemonWatchdog:
    """Called from ``up``'s poll loop: at most every ``CHECK_EVERY`` seconds it reads the heartbeats and kills
    a silent daemon's process group, so the supervisor's crash path restarts it (one restart accounting)."""

    def __init__(
        self,
        webserver_port: int,
        bound: float,
        echo: Callable[[str], None] = print,
        read: Callable[[int], list[Heartbeat] | None] = heartbeats,
    ):
        self.port = webserver_port
        self.bound = bound
        self.every = min(CHECK_EVERY, bound / 4)
        self.echo = echo
        self.read = read
        self.next_check = 0.0
        self.awake_since = 0.0  # wall time this loop last resumed after the machine slept
        self.last_seen: tuple[float, float] | None = None  # (monotonic, wall) of the previous round

    def _note_sleep(self, mono: float, wall: float) -> None:
        """After a suspend (wall time ran on, monotonic time did not) every heartbeat looks old for a while:
        the daemon gets a new grace period instead of a restart."""
        if self.last_seen is not None:
            last_mono, last_wall = self.last_seen
            if (wall - last_wall) - (mono - last_mono) > self.every:
                self.awake_since = wall
        self.last_seen = (mono, wall)

    def check(self, supervisor: Supervisor) -> None:
        mono, wall = time.monotonic(), time.time()
        if self.bound <= 0 or mono < self.next_check:
            return
        self.next_check = mono + self.every
        self._note_sleep(mono, wall)
        child = supervisor.child(DAEMON)
        if child is None or child.restart_at is not None or child.process.poll() is not None:
            return  # not started, or exited: the supervisor's own restart handles it
        beats = self.read(self.port)
        if beats is None:
            return
        now = time.time()
        started_at = max(now - (time.monotonic() - child.started), self.awake_since)
        if must_restart(beats, now, started_at, self.bound):
            quiet = silence(beats, now, started_at)
            self.echo(f"{DAEMON} sent no heartbeat for {quiet:.0f}s; restarting it (pid {child.process.pid})")
            supervisor.kill(DAEMON)
