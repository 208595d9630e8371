"""``crypto-assets up`` as a user runs it, for the tests that drive the whole system: started in a temporary
home on free ports, stopped with SIGTERM, and required to stop cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crypto_assets.serving.processes import free_port, read_process_records
from crypto_assets_tests.conftest import REPO
from crypto_assets_tests.speed.harness import stop_process


def wait_for(condition, timeout: float, what: str, log: Path | None = None, step: float = 1.0):
    """Poll ``condition`` until it is truthy and return its value; on timeout fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def logs_of(home: Path) -> str:
    parts = []
    for path in sorted((home / "logs").glob("*.log")):
        parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(parts)


@contextmanager
def running_up(
    home: Path, dagster_home: Path, port: int, log: Path, args: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen, dict]]:
    """``up`` on ``port`` (with ``args`` such as ``--skip-batch``) with its output in ``log``; yields the process
    and its environment. Afterwards it must exit 0 on SIGTERM and leave no pid file behind."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DAGSTER_HOME": str(dagster_home),
        "CRYPTO_ASSETS_KAFKA_BROKER_PORT": str(free_port()),
    }
    with log.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "crypto_assets.cli", "--home", str(home), "up", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    try:
        yield up, env
    finally:
        stop_process(up, timeout=120)
        print(log.read_text(errors="replace")[-3000:], logs_of(home), sep="\n")
    assert up.returncode == 0, "up did not stop cleanly on SIGTERM"
    assert not read_process_records(home), "pid files left behind"
