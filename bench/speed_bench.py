#!/usr/bin/env python
"""Benchmark of the speed layer: replay WebSocket -> producer -> Kafka (Tansu) -> Spark stream job -> files.

Every part runs as it does in production, each in its own process on this machine: ``crypto-assets
exchange-replay`` (recorded BTCUSDT minutes, sped up, with many synthesized trades per minute so the message
rate is high), ``crypto-assets produce``, the embedded broker, and ``crypto-assets stream`` (local[2], 1-second
trigger by default). The offered load is set well above the 20,000 messages/s target (~41,000 by default), so
the figures show either headroom or the stage where the chain saturates.

**Live phase.** After a warm-up it measures, over a fixed window:

* the rate of each stage: offered by the replay clock, received by the producer from the WebSocket, written
  into Kafka, and committed by the stream job (**sustained messages/s**). The first stage that falls clearly
  below its input is where the chain saturates on this machine;
* the **lag** (messages in Kafka not yet committed by the stream), sampled every second, with its least-squares
  slope over the window: a sustained rate has no growing lag;
* **tick-to-file latency**: for every message of every micro-batch committed in the window, the batch's
  ``committed_at`` (files written, log line appended) minus the message's Kafka timestamp (the moment the
  producer received it from the WebSocket); p50/p90/p99/max over all those messages;
* where a micro-batch's time goes, from the stream job's log: the Spark job that reads Kafka and parses the
  JSON (collected to the driver as Arrow), the driver-side candle fold, and writing files, log line and state.

**Capacity phase** (``--backlog-seconds``, 0 skips it). The stream job is stopped while the producer goes on
filling Kafka; then the producer and replay stop and the stream job restarts from its checkpoint with
``--max-offsets-per-trigger`` (default 40,000: two 1-second triggers' worth of the target) and drains the
backlog alone. Its messages/s is what the stream job sustains when it has the machine to itself, i.e. its
headroom over the live figure (which shares 2 cores with the replay server and the producer).

    PYTHONPATH=. python bench/speed_bench.py                         # ~4 minutes
    PYTHONPATH=. python bench/speed_bench.py --duration 30 --warmup 15 --backlog-seconds 15

Results are printed and written to ``bench/out/speed/results.{json,md}``; process logs to ``bench/out/speed/``.
Figures are reported, never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from crypto_assets.lake.microbatch_log import read_records  # noqa: E402
from streaming_sensor.broker import start_broker, topic_name  # noqa: E402
from streaming_sensor.kafka_source import KafkaStreamReader, positions  # noqa: E402
from streaming_sensor.stream_job import batch_offsets  # noqa: E402

SYMBOL = "BTCUSDT"
SOURCE = REPO.parent / "shared" / "data" / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv"
KLINE_UPDATES_PER_MINUTE = 31  # one every 2 s of replay time plus the final one
TARGET = 20_000
BATCH_LINE = re.compile(
    r"batch (\d+): (\d+) events .*\(spark read\+parse ([\d.]+)s, fold ([\d.]+)s, write\+log\+snapshot ([\d.]+)s\)"
)
STATS_LINE = re.compile(r"^(\S+ \S+) INFO streaming_sensor\.producer: producer: received=(\d+) published=(\d+)")


def _config(home: Path, bootstrap: str, ws_url: str, trigger: float, partitions: int) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "crypto_assets.toml"
    path.write_text(
        f'home = "{home}"\n[[symbols]]\nname = "{SYMBOL}"\nstart = "2021-01-01"\n'
        f'[exchange]\nws_url = "{ws_url}"\n'
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "bench"\npartitions = {partitions}\n'
        f'[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n'
        f'[stream]\ntrigger_seconds = {trigger}\nwatermark = "2 minutes"\n'
    )
    return path


def _spawn(args: list[str], config: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, CRYPTO_ASSETS_CONFIG=str(config), PYTHONPATH=str(REPO))
    env.pop("CRYPTO_ASSETS_HOME", None)
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "crypto_assets.cli", *args], env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _total(offsets: dict) -> int:
    return sum(end for parts in positions(offsets).values() for end in parts.values())


def _committed(checkpoint: Path) -> tuple[int, dict]:
    commits = (
        [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")] if (checkpoint / "commits").is_dir() else []
    )
    if not commits:
        return -1, {}
    ranges = batch_offsets(checkpoint, max(commits))
    return max(commits), {t: {p: r[1] for p, r in parts.items()} for t, parts in ranges.items()}


def _timestamps(bootstrap: str, topic: str, part: int, start: int, end: int) -> list[int]:
    """Kafka timestamps (ms) of offsets [start, end) of one partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-latency", "enable.auto.commit": False})
    out: list[int] = []
    try:
        consumer.assign([TopicPartition(topic, part, start)])
        position = start
        idle = 0
        while position < end and idle < 10:
            messages = consumer.consume(min(10_000, end - position), timeout=1.0)
            idle = 0 if messages else idle + 1
            for message in messages:
                if message.error():
                    continue
                if message.offset() >= end:
                    position = end
                    break
                out.append(message.timestamp()[1])
                position = message.offset() + 1
    finally:
        consumer.close()
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def _messages(record) -> int:
    return sum(end - start for parts in record.offsets.values() for start, end in parts.values())


def _batch_stages(log: Path, first_id: int, last_id: int) -> dict:
    """Median seconds per micro-batch of each stage inside foreachBatch, and the fold's cost per message."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        match = BATCH_LINE.search(line)
        if match and first_id < int(match.group(1)) <= last_id:
            rows.append([int(match.group(2)), *(float(g) for g in match.groups()[2:])])
    if not rows:
        return {}
    events = sum(r[0] for r in rows)
    fold = sum(r[2] for r in rows)
    return {
        "batches": len(rows),
        "median_events_per_batch": round(statistics.median(r[0] for r in rows)),
        "median_spark_read_parse_s": round(statistics.median(r[1] for r in rows), 3),
        "median_fold_s": round(statistics.median(r[2] for r in rows), 3),
        "median_write_s": round(statistics.median(r[3] for r in rows), 3),
        "fold_events_per_s": round(events / fold) if fold else None,
        "share_of_batch_in_fold": round(fold / sum(r[1] + r[2] + r[3] for r in rows), 3),
    }


def _producer_rate(log: Path, t0: float, t1: float) -> float | None:
    """Messages/s the producer received from the WebSocket between two wall-clock times (its stats lines)."""
    points = []
    for line in log.read_text(errors="replace").splitlines():
        match = STATS_LINE.match(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            points.append((when, int(match.group(2))))
    inside = [p for p in points if t0 - 3 <= p[0] <= t1 + 3]
    if len(inside) < 2:
        return None
    (a, ra), (b, rb) = inside[0], inside[-1]
    return (rb - ra) / (b - a) if b > a else None


def _tree(pid: int) -> list[int]:
    """A process and all its descendants (the stream job's JVM and Python workers are its children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process tree."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _wait_for_ws_url(log: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        for line in text.splitlines():
            if line.startswith("REST ") and " WS " in line:
                return line.split(" WS ", 1)[1].strip()
        time.sleep(0.2)
    raise SystemExit(f"the replay server did not start:\n{log.read_text()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", type=float, default=2000.0, help="replay clock speed (default 2000x)")
    parser.add_argument(
        "--trades-per-minute", type=int, default=1200, help="synthesized trades per minute (default 1200)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="measured live window in seconds (default 60)")
    parser.add_argument(
        "--warmup", type=float, default=20.0, help="seconds streamed at least before the window opens (default 20)"
    )
    parser.add_argument(
        "--warmup-max",
        type=float,
        default=90.0,
        help="then until the stream has caught up with Kafka (lag below 2 s of input), at most this long",
    )
    parser.add_argument("--trigger", type=float, default=1.0, help="stream trigger in seconds (default 1)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--backlog-seconds", type=float, default=30.0, help="capacity phase: seconds of backlog built (0: skip)"
    )
    parser.add_argument(
        "--capacity-batch", type=int, default=40_000, help="capacity phase: max messages per micro-batch"
    )
    parser.add_argument("--workdir", default=str(REPO / "bench" / "out" / "speed"))
    args = parser.parse_args(argv)

    work = Path(args.workdir)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    home = work / "home"
    offered = (args.trades_per_minute + KLINE_UPDATES_PER_MINUTE) * args.speed / 60
    print(
        f"replay {SYMBOL} at {args.speed:g}x with {args.trades_per_minute} trades/minute: ~{offered:,.0f} messages/s offered; "
        f"trigger {args.trigger:g}s; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    topics = [topic_name("bench", "kline_1m"), topic_name("bench", "trade")]
    broker = start_broker(0, topics, args.partitions)
    processes: dict[str, subprocess.Popen] = {}
    checkpoint = home / "speed" / "checkpoints" / "speed_candles"
    capacity: dict = {}
    try:
        config = _config(home, broker.bootstrap_servers, "ws://127.0.0.1:9", args.trigger, args.partitions)
        processes["stream"] = _spawn(["stream"], config, work / "stream.log")
        time.sleep(15)  # the stream job's JVM and Python workers start before the replay clock runs

        processes["replay"] = _spawn(
            [
                "exchange-replay",
                "--source",
                str(SOURCE),
                "--symbols",
                SYMBOL,
                "--start",
                "2021-03-27T00:00",
                "--speed",
                str(args.speed),
                "--trades-per-minute",
                str(args.trades_per_minute),
            ],
            config,
            work / "replay.log",
        )
        ws_url = _wait_for_ws_url(work / "replay.log")
        config = _config(home, broker.bootstrap_servers, ws_url, args.trigger, args.partitions)
        processes["produce"] = _spawn(["produce", "--stats-seconds", "2"], config, work / "produce.log")

        reader = KafkaStreamReader({"kafka.bootstrap.servers": broker.bootstrap_servers, "subscribe": ",".join(topics)})
        warm_start = time.time()
        time.sleep(args.warmup)
        # The stream job's first batches are slow (Python workers and the JVM warming up): let it catch up with
        # what piled up meanwhile, so the window measures the steady state rather than a start-up backlog.
        previous = (time.time(), _total(reader.latestOffset({}, None)))
        while time.time() - warm_start < args.warmup_max:
            time.sleep(2.0)
            now, kafka = time.time(), _total(reader.latestOffset({}, None))
            rate = (kafka - previous[1]) / (now - previous[0])
            previous = (now, kafka)
            if kafka - _total(_committed(checkpoint)[1]) <= max(2 * rate, 2 * args.trigger * rate, 5_000):
                break
        warmup_seconds = time.time() - warm_start
        cpu_start = {name: _cpu_seconds(p.pid) for name, p in processes.items()} | {
            "broker": _cpu_seconds(broker.process.pid)
        }
        samples = []  # (time, kafka total, committed total, last committed batch id)
        window_start = time.time()
        while time.time() - window_start < args.duration:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited early; see {work / (name + '.log')}")
            kafka = _total(reader.latestOffset({}, None))
            batch_id, done = _committed(checkpoint)
            samples.append((time.time(), kafka, _total(done), batch_id))
            time.sleep(1.0)
        window_end = time.time()
        cpu_end = {name: _cpu_seconds(p.pid) for name, p in processes.items()} | {
            "broker": _cpu_seconds(broker.process.pid)
        }
        cpu_share = {
            name: round((cpu_end[name] - cpu_start[name]) / (window_end - window_start), 2) for name in cpu_start
        }

        if args.backlog_seconds > 0:
            print(f"capacity phase: stream stopped, {args.backlog_seconds:g}s of backlog ...", flush=True)
            _stop(processes.pop("stream"))
            time.sleep(args.backlog_seconds)
            _stop(processes.pop("produce"))
            _stop(processes.pop("replay"))
            backlog_end = _total(reader.latestOffset({}, None))
            _, done = _committed(checkpoint)
            # Spark replays an uncommitted batch first; it keeps its first log line, so start after the log's end.
            first_id = max(r.batch_id for r in read_records(home / "lake"))
            print(f"  backlog {backlog_end - _total(done):,} messages; stream restarts from its checkpoint", flush=True)
            processes["stream"] = _spawn(
                ["stream", "--max-offsets-per-trigger", str(args.capacity_batch)], config, work / "stream.log"
            )
            deadline = time.monotonic() + 300
            while _total(_committed(checkpoint)[1]) < backlog_end and time.monotonic() < deadline:
                if processes["stream"].poll() is not None:
                    raise SystemExit(f"stream exited early; see {work / 'stream.log'}")
                time.sleep(0.5)
            last_id, _ = _committed(checkpoint)
            drained = [r for r in read_records(home / "lake") if first_id < r.batch_id <= last_id]
            if len(drained) >= 3:
                # From the end of the first new batch to the end of the last: JVM start-up is not counted.
                stamps = [datetime.fromisoformat(r.committed_at).timestamp() for r in drained]
                span = stamps[-1] - stamps[0]
                moved = sum(_messages(r) for r in drained[1:])
                gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
                full = [_messages(r) for r in drained if _messages(r) >= 0.9 * args.capacity_batch]
                capacity = {
                    "backlog_messages": backlog_end - _total(done),
                    "drain_batches": len(drained),
                    "drain_messages_per_s": round(moved / span) if span > 0 else None,
                    # Steady state: a full batch over the median time between batches (the first, cold ones aside).
                    "drain_steady_messages_per_s": round(
                        statistics.median(full) / statistics.median(gaps[len(gaps) // 2 :])
                    )
                    if full and gaps
                    else None,
                    "drain_median_seconds_between_batches": round(statistics.median(gaps), 2),
                    "caught_up": _total(_committed(checkpoint)[1]) >= backlog_end,
                    **{f"drain_{k}": v for k, v in _batch_stages(work / "stream.log", first_id, last_id).items()},
                }
        reader.stop()
    finally:
        for process in reversed(list(processes.values())):
            _stop(process)

    # Throughput and lag over the live window.
    (t0, k0, c0, b0), (t1, k1, c1, b1) = samples[0], samples[-1]
    produced_rate = (k1 - k0) / (t1 - t0)
    consumed_rate = (c1 - c0) / (t1 - t0)
    received_rate = _producer_rate(work / "produce.log", t0, t1)
    lags = [k - c for _, k, c, _ in samples]
    third = max(1, len(lags) // 3)
    lag_first, lag_last = statistics.mean(lags[:third]), statistics.mean(lags[-third:])
    lag_slope = _slope([(t - t0, k - c) for t, k, c, _ in samples])
    # Growing: the lag rises by more than 2% of the incoming rate, and its last third is above its first.
    lag_growing = lag_slope > 0.02 * max(produced_rate, 1.0) and lag_last > lag_first

    # Tick-to-file latency of every message in batches committed inside the window.
    latencies: list[float] = []
    records = [r for r in read_records(home / "lake") if b0 < r.batch_id <= b1]
    for record in records:
        committed_ms = datetime.fromisoformat(record.committed_at).timestamp() * 1000
        for topic, parts in record.offsets.items():
            for part, (start, end) in parts.items():
                if end > start:
                    stamps = _timestamps(broker.bootstrap_servers, topic, int(part), start, end)
                    latencies += [(committed_ms - ts) / 1000 for ts in stamps]
    broker.stop()
    batch_seconds = [
        datetime.fromisoformat(b.committed_at).timestamp() - datetime.fromisoformat(a.committed_at).timestamp()
        for a, b in zip(records, records[1:], strict=False)
    ]

    stages = [
        ("replay -> producer (WebSocket)", offered, received_rate),
        ("producer -> Kafka", received_rate, produced_rate),
        ("Kafka -> stream job (committed)", produced_rate, consumed_rate),
    ]
    saturated = next((name for name, given, got in stages if given and got is not None and got < 0.9 * given), "none")
    if saturated.startswith("Kafka") and not lag_growing:
        saturated = "none"  # the stream takes what arrives; a backlog from the warm-up shrinking is not a limit
    results = {
        "offered_messages_per_s": round(offered),
        "producer_received_messages_per_s": round(received_rate) if received_rate is not None else None,
        "produced_messages_per_s": round(produced_rate),
        "sustained_messages_per_s": round(consumed_rate),
        "saturates_at": saturated,
        "lag_messages_first_third": round(lag_first),
        "lag_messages_last_third": round(lag_last),
        "lag_slope_messages_per_s": round(lag_slope),
        "lag_growing": lag_growing,
        "warmup_seconds": round(warmup_seconds, 1),
        "cpu_cores_used_in_window": cpu_share,
        "batches_in_window": len(records),
        "median_seconds_between_batches": round(statistics.median(batch_seconds), 2) if batch_seconds else None,
        **_batch_stages(work / "stream.log", b0, b1),
        "messages_timed": len(latencies),
        "latency_p50_s": round(_percentile(latencies, 0.50), 2) if latencies else None,
        "latency_p90_s": round(_percentile(latencies, 0.90), 2) if latencies else None,
        "latency_p99_s": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "latency_max_s": round(max(latencies), 2) if latencies else None,
        "window_seconds": round(window_end - window_start, 1),
        "trigger_seconds": args.trigger,
        "speed": args.speed,
        "trades_per_minute": args.trades_per_minute,
        **{f"capacity_{k}": v for k, v in capacity.items()},
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
    }
    targets = [
        ("offered load well above the target (>= 1.5x)", offered >= 1.5 * TARGET),
        ("sustained messages/s >= 20,000 (live, 2 cores shared with replay + producer)", consumed_rate >= TARGET),
        ("no growing lag", not lag_growing),
        ("tick-to-file p50 <= 2 s", results["latency_p50_s"] is not None and results["latency_p50_s"] <= 2),
        ("tick-to-file p99 <= 5 s", results["latency_p99_s"] is not None and results["latency_p99_s"] <= 5),
    ]
    if capacity.get("drain_steady_messages_per_s") is not None:
        targets.append(
            (
                "stream job alone sustains >= 20,000 messages/s (capacity phase, steady)",
                capacity["drain_steady_messages_per_s"] >= TARGET,
            )
        )
    lines = [
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in results.items()),
        "",
        "| target | met |",
        "|---|---|",
    ]
    lines += [f"| {name} | {'yes' if ok else 'no'} |" for name, ok in targets]
    text = "\n".join(lines)
    print(text)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    (work / "results.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
