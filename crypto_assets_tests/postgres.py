"""A throwaway PostgreSQL server for tests: ``initdb`` a cluster in a temp dir, ``pg_ctl start`` it on a free
port on 127.0.0.1 (Unix socket in the same dir), and stop and remove it afterwards.

PostgreSQL refuses to run as root; as root (containers, CI) the server runs as the ``postgres`` system user
of Debian's package, in a temp dir it owns.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a ``postgresql+psycopg2://`` URL (the driver dagster-postgres speaks) of a fresh database; the server is stopped and its files removed on exit."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        assert shutil.which(tool), f"{tool} not on PATH: install PostgreSQL (Debian's postgresql package)"
    root = Path(tempfile.mkdtemp(prefix="crypto-assets-pg-"))
    as_user: list[str] = []
    user = getpass.getuser()
    if os.geteuid() == 0:
        user = "postgres"
        owner = pwd.getpwnam(user)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        root.chmod(0o755)
        as_user = ["runuser", "-u", user, "--"]
    data, port = root / "data", _free_port()

    def run(*command: str, check: bool = True) -> None:
        subprocess.run([*as_user, *command], check=check, capture_output=True, cwd=root)

    try:
        run("initdb", "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        try:
            run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, "dagster")
            yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/dagster"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
