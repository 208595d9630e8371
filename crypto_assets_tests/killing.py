"""Kill a real process mid-work: the tests of "a crash loses and duplicates nothing" run their writer as a child
``python -c`` with the checkout on its path, and SIGKILL it a given time after it says it has started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from crypto_assets_tests.conftest import REPO


def sigkill_after_start(code: str, args: list[str], delay: float) -> None:
    """Run ``code`` with ``args``; once it prints ``started`` (imports done, the work begun), wait ``delay`` s
    and SIGKILL it (a no-op if it has finished)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        assert process.stdout.readline() == b"started\n"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
        process.wait(30)
        process.stdout.close()
