"""Running the speed layer's real parts from tests: the producer in a thread, the stream job as a process,
and reading back what the stream wrote."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from crypto_assets.lake.microbatch_log import CANDLES_1M, DAILY, batch_file, read_records
from crypto_assets_tests.conftest import REPO, write_config
from streaming_sensor.broker import EmbeddedBroker, start_broker
from streaming_sensor.kafka_source import KafkaStreamReader, positions
from streaming_sensor.producer import ProducerOptions, StreamProducer
from streaming_sensor.stream_job import batch_offsets

SYMBOL = "BTCUSDT"


@contextmanager
def embedded_broker(port: int = 0, topics: list[str] | None = None, partitions: int = 3) -> Iterator[EmbeddedBroker]:
    """A Tansu broker for one test, stopped when it ends."""
    broker = start_broker(port, topics, partitions)
    try:
        yield broker
    finally:
        broker.stop()


def speed_config(
    home: Path, bootstrap: str, prefix: str, ws_url: str = "ws://127.0.0.1:9", trigger: float = 1.0
) -> Path:
    extra = f"""
[[symbols]]
name = "{SYMBOL}"
start = "2021-01-01"

[exchange]
ws_url = "{ws_url}"

[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{prefix}"
partitions = 3

[spark]
master = "local[2]"
shuffle_partitions = 2

[stream]
trigger_seconds = {trigger}
watermark = "2 minutes"
"""
    return write_config(home, extra=extra)


@contextmanager
def producer_thread(options: ProducerOptions, speed_dir: Path):
    """Run a StreamProducer on its own event loop; stopping it drains its buffer."""
    ready = threading.Event()
    holder: dict = {}

    def run() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
            holder["producer"] = StreamProducer(options, speed_dir)
            ready.set()
            await holder["producer"].run(stop)

        asyncio.run(main())

    thread = threading.Thread(target=run, name="producer", daemon=True)
    thread.start()
    assert ready.wait(10)
    producer = holder["producer"]
    try:
        yield producer
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(60)
        assert not thread.is_alive(), "the producer did not stop"


def kafka_ends(bootstrap: str, topics: list[str]) -> dict[str, dict[str, int]]:
    reader = KafkaStreamReader({"kafka.bootstrap.servers": bootstrap, "subscribe": ",".join(topics)})
    try:
        return positions(reader.latestOffset({}, None))
    finally:
        reader.stop()


def start_command(config: Path, log_path: Path, *args: str, new_session: bool = False) -> subprocess.Popen:
    """``crypto-assets <args>`` in its own process with this config, output appended to ``log_path``;
    ``new_session`` gives it a process group of its own, as ``up`` does, to signal it like ``down`` does."""
    env = dict(os.environ, CRYPTO_ASSETS_CONFIG=str(config), PYTHONPATH=str(REPO))
    env.pop("CRYPTO_ASSETS_HOME", None)
    handle = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "crypto_assets.cli", *args],
        env=env,
        cwd=REPO,
        stdout=handle,
        stderr=handle,
        start_new_session=new_session,
    )


def start_stream(
    config: Path, log_path: Path, extra_args: tuple[str, ...] = (), new_session: bool = False
) -> subprocess.Popen:
    return start_command(config, log_path, "stream", *extra_args, new_session=new_session)


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
    """Signal a process started with ``new_session`` and its whole group, as ``down`` and Ctrl-C do; waits
    for the process and every process it started, and returns its exit code."""
    children = descendants(process.pid)
    os.killpg(process.pid, sig)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"the process did not stop within {timeout:.0f}s of {signal.Signals(sig).name}") from None
    deadline = time.monotonic() + 60
    while alive := [pid for pid in children if _state(pid) != "Z"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {alive} still run 60 s after their parent stopped")
        time.sleep(0.05)
    return code


TRACEBACK_MARKS = ("Traceback (most recent call last)", "Py4JJavaError", "Stack Trace:")


def committed_offsets(checkpoint: Path) -> dict[str, dict[str, int]]:
    """End offsets of the newest batch Spark has committed."""
    commits = (
        [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")] if (checkpoint / "commits").is_dir() else []
    )
    if not commits:
        return {}
    ranges = batch_offsets(checkpoint, max(commits))
    return {t: {p: r[1] for p, r in parts.items()} for t, parts in ranges.items()}


def caught_up(checkpoint: Path, ends: dict[str, dict[str, int]]) -> bool:
    done = committed_offsets(checkpoint)
    return all(done.get(t, {}).get(p, 0) >= end for t, parts in ends.items() for p, end in parts.items())


def wait_caught_up(process: subprocess.Popen, checkpoint: Path, ends: dict, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not caught_up(checkpoint, ends):
        if process.poll() is not None:
            raise AssertionError(f"the stream job exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the stream job did not catch up with {ends} in {timeout}s:\n{log_path.read_text()[-4000:]}"
            )
        time.sleep(0.5)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def sigkill_job(process: subprocess.Popen, whole_tree: bool = False, timeout: float = 60.0) -> None:
    """SIGKILL the stream job's Python driver, as a crash would, then wait until the processes it started are
    gone too: its JVM notices the driver's end (its stdin closes) and exits on its own, and may still finish
    a batch's Spark commit meanwhile, so the checkpoint is only final once it has. ``whole_tree`` kills the
    JVM and the Python workers at the same moment too (as the kernel's OOM killer takes a container)."""
    children = descendants(process.pid)
    for pid in reversed(children) if whole_tree else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + timeout
    while alive := [pid for pid in children if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {alive} of the killed stream job still run after {timeout:.0f}s")
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Ask a child to stop (SIGTERM by default) and wait; kill it if it has not stopped within ``timeout``."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def speed_view(lake: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What a reader of the contract sees: logged batches only, the newest row per candle / day."""
    records = read_records(lake)
    candles, daily = [], []
    for record in records:
        if record.rows.get(CANDLES_1M):
            candles.append(pl.read_parquet(batch_file(lake, CANDLES_1M, record.batch_id)))
        if record.rows.get(DAILY):
            daily.append(pl.read_parquet(batch_file(lake, DAILY, record.batch_id)))
    latest_candles = (
        pl.concat(candles).sort("batch_id").unique(["symbol", "open_time"], keep="last").sort("symbol", "open_time")
    )
    latest_daily = pl.concat(daily).sort("batch_id").unique(["symbol", "date"], keep="last").sort("symbol", "date")
    return latest_candles, latest_daily
