"""Pid files of the processes ``crypto-assets up`` supervises, under ``<home>/run/<name>.json``, and liveness
checks (the pid exists and, where the process serves a port, something answers on it)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crypto_assets.lake.atomic import write_text_atomic

RUN_DIR = "run"


@dataclass
class ProcessRecord:
    name: str
    pid: int
    started_at: str  # ISO-8601 UTC
    ports: list[int] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    log: str | None = None


def run_dir(home: Path) -> Path:
    return home / RUN_DIR


def record_path(home: Path, name: str) -> Path:
    return run_dir(home) / f"{name}.json"


def write_record(home: Path, record: ProcessRecord) -> Path:
    path = record_path(home, record.name)
    write_text_atomic(json.dumps(asdict(record), indent=1), path)
    return path


def remove_record(home: Path, name: str) -> None:
    record_path(home, name).unlink(missing_ok=True)


def read_process_records(home: Path) -> dict[str, ProcessRecord]:
    found = {}
    directory = run_dir(home)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = ProcessRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            continue  # a pid file cut short or from another version: treated as absent
        found[record.name] = record
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
