#!/usr/bin/env python
"""Throughput of the exchange replay server's WebSocket streams, in messages per second.

The server runs as its own process (``crypto-assets exchange-replay``, as the speed layer and the demo run
it) on the live synthetic market (BTC and ETH; ``--data recorded`` for the 2021 BTC recording), replaying at a
high speed so that it, not the clock, is the limit. Clients in
this process subscribe to ``btcusdt``/``ethusdt`` ``@kline_1m`` and ``@trade`` on combined streams and count
what arrives for a fixed time after a warm-up: minimal clients that only count frames (the server's output),
and for comparison one websockets client that decodes every message (what one Python consumer can take). Each configuration gets a fresh server; the table shows them
side by side, with the target (>= 20,000 messages/s on 2 cores) and whether it was met. It is never asserted.
"per server CPU-s" (messages per CPU second the server process used) does not depend on how busy the machine
is; the server is one asyncio process, so on an idle core it approaches that figure.

    PYTHONPATH=. python bench/replay_bench.py                  # ~40 s
    PYTHONPATH=. python bench/replay_bench.py --seconds 5 --connections 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "binance_spot_1m" / "2021"
TARGET = 20_000
STREAMS = "btcusdt@kline_1m/btcusdt@trade/ethusdt@kline_1m/ethusdt@trade"


def start_server(speed: float, data: str) -> tuple[subprocess.Popen, str, str]:
    source = ["--source", str(DATA), "--start", "2021-03-26T03:00:00"] if data == "recorded" else ["--scale", "tiny"]
    command = [sys.executable, "-m", "crypto_assets.cli", "exchange-replay", *source, "--speed", str(speed)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    match = re.match(r"REST (\S+)\s+WS (\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"replay server did not start: {line!r}")
    return proc, match.group(1), match.group(2)


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def consume_python(url: str, warmup: float, seconds: float, counts: list[int], index: int) -> None:
    """A websockets client that decodes every message, as a Python consumer would."""
    async with connect(url, max_size=2**20, compression=None, max_queue=None) as ws:
        deadline_warm = time.monotonic() + warmup
        while time.monotonic() < deadline_warm:
            await ws.recv()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await ws.recv()
            counts[index] += 1


async def consume_frames(url: str, warmup: float, seconds: float, counts: list[int], index: int) -> None:
    """A minimal client that only counts WebSocket frames, so the figure is the server's output, not the
    cost of decoding messages in Python."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=2**22)
    key = base64.b64encode(os.urandom(16)).decode()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    status = await reader.readline()
    if b" 101 " not in status:
        raise SystemExit(f"handshake refused: {status!r}")
    await reader.readuntil(b"\r\n\r\n")
    buffer = bytearray()
    warm_until = time.monotonic() + warmup
    end = warm_until + seconds
    while (now := time.monotonic()) < end:
        buffer += await reader.read(1 << 20)
        frames, offset = 0, 0
        while len(buffer) - offset >= 2:
            length = buffer[offset + 1] & 0x7F
            head = 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                length, head = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                length, head = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), 10
            if len(buffer) - offset < head + length:
                break
            frames += buffer[offset] & 0x0F == 0x1  # text frames only
            offset += head + length
        del buffer[:offset]
        if now >= warm_until:
            counts[index] += frames
    writer.transport.abort()


async def measure(ws_url: str, connections: int, warmup: float, seconds: float, python_client: bool) -> int:
    counts = [0] * connections
    url = f"{ws_url}/stream?streams={STREAMS}"
    consume = consume_python if python_client else consume_frames
    await asyncio.gather(*(consume(url, warmup, seconds, counts, i) for i in range(connections)))
    return sum(counts)


def run_one(
    connections: int, speed: float, warmup: float, seconds: float, python_client: bool, data: str
) -> dict[str, float]:
    proc, _, ws_url = start_server(speed, data)
    try:
        cpu_before = server_cpu_seconds(proc.pid)
        started = time.monotonic()
        total = asyncio.run(measure(ws_url, connections, warmup, seconds, python_client))
        wall = time.monotonic() - started
        cpu = server_cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return {"msgs": total, "rate": total / seconds, "server_cpu": cpu / wall, "per_cpu_second": total / max(cpu, 1e-9)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--speed", type=float, default=200_000.0, help="replay speed (x real time)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--data",
        choices=["synthetic", "recorded"],
        default="synthetic",
        help="the live synthetic market (BTC and ETH at once) or the 2021 BTC recording",
    )
    args = parser.parse_args()
    if args.data == "recorded" and not DATA.is_dir():
        raise SystemExit(f"expected the recorded data at {DATA}")
    data = DATA if args.data == "recorded" else "synthetic market (tiny), live from now"
    print(f"replay server: {data} at {args.speed:g}x, streams {STREAMS}, {os.cpu_count()} cores")
    print(f"load average before: {os.getloadavg()[0]:.1f} (other processes share the cores; see 'per server CPU-s')")
    header = f"{'client':<18} | {'connections':>11} | {'messages/s (all)':>16} | {'per connection':>14} | {'server CPU':>10} | {'per server CPU-s':>16} | met >= {TARGET:,}/s"
    print(header)
    print("-" * len(header))
    runs = [("frame counter", n, False) for n in args.connections] + [("python websockets", 1, True)]
    for label, connections, python_client in runs:
        result = run_one(connections, args.speed, args.warmup, args.seconds, python_client, args.data)
        met = "yes" if result["rate"] >= TARGET else "no"
        print(
            f"{label:<18} | {connections:>11} | {result['rate']:>16,.0f} | {result['rate'] / connections:>14,.0f} | "
            f"{result['server_cpu']:>10.0%} | {result['per_cpu_second']:>16,.0f} | {met}",
            flush=True,
        )
    print(f"bench process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
