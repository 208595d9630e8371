"""Test tiers: ``pytest --quick`` (``bash scripts/test.sh --quick``) runs the unit tier, every test marked
neither ``slow`` nor ``integration``; plain ``pytest`` runs everything.

A test that starts a process, a JVM or a server (the broker, a replay exchange, Dagster's webserver or daemon,
PostgreSQL, moto, the reports server, Prophet's Stan fits) belongs to ``integration``. Tests using one of
HEAVY_FIXTURES are marked here; the others carry the marker themselves. During a quick run a unit test that
starts one anyway fails, naming what it started, so a missing marker shows at once instead of slowing the tier.
"""

from __future__ import annotations

import multiprocessing.process
import os
import socket
import sys
from pathlib import Path

import dagster
import pytest

HEAVY_FIXTURES = frozenset({"spark", "postgres_url", "s3_endpoint", "s3_lake"})  # a JVM, PostgreSQL, moto
# Audit events (https://docs.python.org/3/library/audit_events.html) of starting a process.
HEAVY_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec"}
)
DAGSTER_PACKAGE = Path(dagster.__file__).parent

_guarded: str | None = None  # node id of the unit test running under the guard
_started: list[str] = []  # what it started, reported even if the code under test swallowed the error


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        help="run only the unit tier (no slow or integration test) and fail a unit test that starts a process or server",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("quick"):
        sys.addaudithook(_refuse_heavy_events)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    if config.getoption("quick"):
        heavy = [item for item in items if is_heavy(item)]
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not is_heavy(item)]


def is_heavy(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) for name in ("slow", "integration"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Guards setup, call and teardown, so module and session fixtures are guarded too."""
    global _guarded
    if not item.config.getoption("quick"):
        return (yield)
    _guarded, _started[:] = item.nodeid, []
    with pytest.MonkeyPatch.context() as patch:
        # multiprocessing's spawn method raises no audit event; a server listens (binding alone, as free_port
        # does to find a port, is cheap).
        patch.setattr(multiprocessing.process.BaseProcess, "start", _refuse_process)
        patch.setattr(socket.socket, "listen", _refuse_listen)
        try:
            return (yield)
        finally:
            _guarded = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if _started and not report.failed:
        report.outcome = "failed"
        report.longrepr = refusal(_started[0])
    _started.clear()
    return report


def refusal(what: str) -> str:
    return (
        f"{_guarded} started {what} in the quick (unit) tier: mark it @pytest.mark.integration (a process, JVM "
        "or server, under a minute) or @pytest.mark.slow (see crypto_assets_tests/tiers.py)"
    )


def _refuse_heavy_events(event: str, args: tuple) -> None:
    if _guarded is None or event not in HEAVY_EVENTS or is_light_helper(event, args):
        return
    command = f" {command_of(args)}"[:300] if event in ("subprocess.Popen", "os.posix_spawn") else ""
    _refuse(f"{event}{command}")


def _refuse_process(process: multiprocessing.process.BaseProcess) -> None:
    _refuse(f"a multiprocessing process ({process.name})")


def _refuse_listen(sock: socket.socket, *backlog: int) -> None:
    _refuse(f"a server listening on {sock.getsockname()}")


def _refuse(what: str) -> None:
    _started.append(what)
    raise RuntimeError(refusal(what))


def is_light_helper(event: str, args: tuple) -> bool:
    """Helpers that cost milliseconds and end with the code that started them: Dagster mirrors an in-process run's
    output into its compute logs with ``tail -F`` and a watcher script of its own; matplotlib lists the fonts with
    ``fc-list`` once per machine to build its font cache."""
    if event not in ("subprocess.Popen", "os.posix_spawn"):
        return False
    command = command_of(args)
    if not command:
        return False
    if Path(command[0]).name in ("tail", "fc-list"):
        return True
    return (
        len(command) > 1
        and Path(command[0]) == Path(sys.executable)
        and Path(command[1]).is_relative_to(DAGSTER_PACKAGE)
    )


def command_of(args: tuple) -> list[str]:
    """The command line of a ``subprocess.Popen`` or ``os.posix_spawn`` event (never its environment)."""
    argv = [args[1]] if isinstance(args[1], str | bytes | os.PathLike) else list(args[1])
    return [os.fsdecode(part) for part in argv]
