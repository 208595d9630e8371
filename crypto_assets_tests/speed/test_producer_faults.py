"""The producer against the replay server's faults and a broker outage, on a real Tansu broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from aiokafka.partitioner import DefaultPartitioner

from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.missed import read_stretches
from crypto_assets.serving.processes import free_port
from crypto_assets_tests.speed.binance_messages import recorded_candles
from crypto_assets_tests.speed.harness import (
    SYMBOL,
    embedded_broker,
    kafka_ends,
    producer_thread,
    speed_config,
    start_command,
    stop_process,
)
from streaming_sensor.broker import start_broker, topic_name
from streaming_sensor.producer import ProducerOptions, read_state

pytestmark = pytest.mark.integration  # the broker and a replay exchange server

START = datetime(2021, 3, 26, 3, 0, tzinfo=UTC)
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def market(shared_data: Path) -> Market:
    return Market.from_sources([str(shared_data / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv")], [SYMBOL])


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_topic(bootstrap: str, topic: str, before: dict[str, int] | None = None, after: bool = False) -> list[dict]:
    """Every message of a topic (``before``: only offsets below these per partition; ``after``: only the rest)."""
    from confluent_kafka import Consumer, TopicPartition

    from crypto_assets_tests.speed.harness import kafka_ends

    ends = kafka_ends(bootstrap, [topic])[topic]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    out = []
    try:
        for part, end in ends.items():
            if not end:
                continue
            consumer.assign([TopicPartition(topic, int(part), 0)])
            got = 0
            while got < end:
                for message in consumer.consume(1000, timeout=2.0):
                    cut = (before or {}).get(part)
                    if cut is None or (message.offset() < cut) != after:
                        out.append(json.loads(message.value()))
                    got = message.offset() + 1
    finally:
        consumer.close()
    return out


def final_klines(messages: list[dict]) -> pl.DataFrame:
    rows = [
        {
            "open_time": datetime.fromtimestamp(m["k"]["t"] / 1000, UTC),
            "open": float(m["k"]["o"]),
            "high": float(m["k"]["h"]),
            "low": float(m["k"]["l"]),
            "close": float(m["k"]["c"]),
            "volume": float(m["k"]["v"]),
        }
        for m in messages
        if m["k"]["x"]
    ]
    return (
        pl.DataFrame(rows)
        .with_columns(pl.col("open_time").dt.cast_time_unit("us"))
        .unique("open_time")
        .sort("open_time")
    )


def options(ws_url: str, bootstrap: str, prefix: str, **extra) -> ProducerOptions:
    return ProducerOptions(
        symbols=[SYMBOL], ws_url=ws_url, bootstrap_servers=bootstrap, topic_prefix=prefix, stats_seconds=2, **extra
    )


def test_dropped_connection_and_server_shutdown_reconnect_and_every_gap_is_a_recorded_stretch(
    market, shared_data, tmp_path
):
    prefix = "faults"
    with (
        embedded_broker(topics=[topic_name(prefix, "kline_1m"), topic_name(prefix, "trade")]) as broker,
        ReplayServer(market, start=START, speed=120.0) as replay,
    ):
        with producer_thread(
            options(replay.ws_url, broker.bootstrap_servers, prefix, backoff_initial=2.0), tmp_path
        ) as producer:
            c = producer.counters
            wait_for(lambda: c.published > 100, what="first messages")
            replay.drop_connections()  # cut without a close frame
            wait_for(lambda: c.reconnects >= 1 and producer.connected.is_set(), what="reconnect after a drop")
            time.sleep(1.0)
            replay.server_shutdown(0.3)
            wait_for(lambda: c.reconnects >= 2 and producer.connected.is_set(), what="reconnect after serverShutdown")
            replay.inject(ws_malformed=2)
            wait_for(lambda: c.malformed >= 2, what="malformed messages")
            time.sleep(2.5)  # the stream goes on after them
        klines = read_topic(broker.bootstrap_servers, topic_name(prefix, "kline_1m"))
        ends = kafka_ends(broker.bootstrap_servers, [topic_name(prefix, "kline_1m"), topic_name(prefix, "trade")])

    # Each topic's messages are in the partition the default partitioner (murmur2 of the key) picks, as with send().
    expected = str(DefaultPartitioner()(SYMBOL.encode(), [0, 1, 2], [0, 1, 2]))
    assert all({part for part, end in parts.items() if end} == {expected} for parts in ends.values()), ends
    assert c.malformed == 2 and c.dropped == 0
    stretches = read_stretches(tmp_path)
    reasons = [s.reason for s in stretches]
    assert any(r.startswith("connection closed") for r in reasons) and "serverShutdown" in reasons, reasons
    closed = [s for s in stretches if s.to_ms is not None]
    assert len(closed) == 2 and all(s.from_ms < s.to_ms for s in closed)
    assert [s.reason for s in stretches if s.to_ms is None] == ["producer stopped"]

    # Every final candle published equals the recording, and each minute missing between the first and the
    # last one ended inside a recorded stretch.
    finals = final_klines(klines)
    recorded = recorded_candles(shared_data, SYMBOL, 2021, START.replace(tzinfo=None), 200)
    assert finals.join(recorded.drop("symbol"), on="open_time", how="anti").height == 0
    assert finals.equals(recorded.drop("symbol").join(finals.select("open_time"), on="open_time", how="semi"))
    have = {int(t.timestamp() * 1000) for t in finals["open_time"]}
    missing = [m for m in range(min(have), max(have), MINUTE_MS) if m not in have]
    assert missing, "a 30-second gap at 120x spans at least one minute close"
    for minute in missing:
        close_event = minute + MINUTE_MS
        assert any(s.from_ms <= close_event <= s.to_ms for s in closed), f"minute {minute} missing without a stretch"


@contextmanager
def quiet_exchange(messages_per_connection: int) -> Iterator[tuple[str, list[int]]]:
    """A WebSocket server that sends a few trades on each connection, then stays silent (pings are still
    answered); yields its URL and a list that grows by one per connection."""
    from websockets.asyncio.server import serve

    connections: list[int] = []
    ready, holder = threading.Event(), {}

    async def handler(ws) -> None:
        connections.append(len(connections))
        for i in range(messages_per_connection):
            event = int(START.timestamp() * 1000) + (len(connections) * 1000 + i) * 10
            data = {"e": "trade", "E": event, "s": SYMBOL, "t": event, "p": "1.0", "q": "1.0", "T": event, "m": True}
            await ws.send(json.dumps({"stream": f"{SYMBOL.lower()}@trade", "data": data}))
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            holder["port"], holder["stop"] = server.sockets[0].getsockname()[1], asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"ws://127.0.0.1:{holder['port']}", connections
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)


@pytest.mark.parametrize(
    ("limit", "reason"),
    [({"silence_seconds": 1.0}, "silent connection"), ({"max_connection_seconds": 1.0}, "connection age limit")],
)
def test_a_silent_or_old_connection_is_replaced_and_the_gap_is_a_recorded_stretch(tmp_path, limit, reason):
    unreachable = f"127.0.0.1:{free_port()}"  # the WebSocket side does not need the broker
    with quiet_exchange(3) as (url, connections):
        opts = options(url, unreachable, "quiet", backoff_initial=0.1, drain_seconds=0.5, **limit)
        with producer_thread(opts, tmp_path) as producer:
            wait_for(lambda: len(connections) >= 3 and producer.counters.received >= 9, what="two reconnects")
    assert producer.counters.reconnects >= 2 and producer.counters.malformed == 0
    replaced = [s for s in read_stretches(tmp_path) if s.reason == reason]
    assert len(replaced) >= 2 and all(s.to_ms is not None and s.from_ms < s.to_ms for s in replaced[:2]), replaced


def test_broker_outage_buffers_and_delivers_everything_once_the_broker_is_back(market, tmp_path):
    prefix = "outage"
    topics = [topic_name(prefix, "kline_1m"), topic_name(prefix, "trade")]
    port = free_port()
    broker = start_broker(port, topics)
    try:
        with (
            ReplayServer(market, start=START, speed=120.0) as replay,
            producer_thread(
                options(replay.ws_url, broker.bootstrap_servers, prefix, backoff_initial=0.2), tmp_path
            ) as producer,
        ):
            c = producer.counters
            wait_for(lambda: c.published > 200, what="first messages")
            broker.stop()  # Tansu keeps its log in memory: what it acknowledged is gone, the new one starts empty
            wait_for(lambda: not producer.broker_ok, what="the producer to notice")  # acks of the last chunk counted
            published_before = c.published
            received_at_outage = c.received
            time.sleep(4.0)
            assert c.received > received_at_outage + 50, "the WebSocket side keeps receiving during the outage"
            assert c.published == published_before
            assert len(producer.buffer) + producer.in_flight > 50, "messages wait in the buffer"
            broker = start_broker(port, topics)
            wait_for(lambda: not producer.buffer and producer.in_flight == 0, timeout=60, what="buffer drained")
            time.sleep(1.0)
        klines = read_topic(broker.bootstrap_servers, topics[0])
        trades = read_topic(broker.bootstrap_servers, topics[1])
    finally:
        broker.stop()
    assert c.dropped == 0 and c.published == c.received - c.malformed
    assert [s.reason for s in read_stretches(tmp_path)] == ["producer stopped"]  # the outage itself lost nothing
    # Everything not acknowledged by the old broker reached the new one (a retried send may repeat a message).
    assert len(klines) + len(trades) >= c.published - published_before
    minutes = final_klines(klines)["open_time"].to_list()
    assert len(minutes) > 3 and all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))


def test_a_full_buffer_drops_new_messages_and_records_them_as_missed(market, tmp_path):
    unreachable = f"127.0.0.1:{free_port()}"
    with ReplayServer(market, start=START, speed=60.0) as replay:
        opts = options(replay.ws_url, unreachable, "nobroker", buffer_limit=40, drain_seconds=0.5)
        with producer_thread(opts, tmp_path) as producer:
            wait_for(lambda: producer.counters.dropped > 20, what="drops")
    c = producer.counters
    assert c.published == 0 and c.dropped == c.received - c.malformed
    full = [s for s in read_stretches(tmp_path) if s.reason == "buffer full"]
    assert full and all(s.from_ms <= s.to_ms for s in full)
    assert min(s.from_ms for s in full) <= int(START.timestamp() * 1000) + 2 * MINUTE_MS


def _covered(missing_minutes: list[int], stretches) -> None:
    for minute in missing_minutes:
        close_event = minute + MINUTE_MS
        assert any(s.from_ms <= close_event <= s.to_ms for s in stretches), f"minute {minute} missing without a stretch"


def test_a_sigkilled_producer_records_what_it_missed_when_it_starts_again(market, shared_data, tmp_path):
    prefix = "crash"
    topics = [topic_name(prefix, "kline_1m"), topic_name(prefix, "trade")]
    home, log_path = tmp_path / "home", tmp_path / "produce.log"
    speed_dir = home / "speed"

    def published() -> int:
        return sum(sum(parts.values()) for parts in kafka_ends(broker.bootstrap_servers, topics).values())

    with embedded_broker(topics=topics) as broker, ReplayServer(market, start=START, speed=120.0) as replay:
        config = speed_config(home, broker.bootstrap_servers, prefix, ws_url=replay.ws_url)
        first = start_command(config, log_path, "produce", "--stats-seconds", "2")
        try:
            wait_for(
                lambda: published() > 300 and SYMBOL in read_state(speed_dir).get("delivered_ms", {}), 90, "first run"
            )
            time.sleep(random.uniform(0.0, 1.0))
            first.send_signal(signal.SIGKILL)
            first.wait()
        finally:
            stop_process(first)
        saved = read_state(speed_dir)
        at_kill = kafka_ends(broker.bootstrap_servers, topics)
        assert saved["stopped"] is False and [s.reason for s in read_stretches(speed_dir)] == [], (
            "a SIGKILL records nothing itself"
        )
        time.sleep(3.0)  # six exchange minutes at 120x that nobody captures
        second = start_command(config, log_path, "produce", "--stats-seconds", "2")
        try:
            wait_for(lambda: published() > sum(sum(p.values()) for p in at_kill.values()) + 300, 90, "second run")
        finally:
            stop_process(second)
        assert second.returncode == 0, log_path.read_text()[-3000:]
        runs = [
            [m for t in topics for m in read_topic(broker.bootstrap_servers, t, at_kill[t], after=after)]
            for after in (False, True)
        ]
        klines = read_topic(broker.bootstrap_servers, topics[0])

    stretches = read_stretches(speed_dir)
    crashed = [s for s in stretches if s.reason == "producer crashed"]
    assert len(crashed) == 1 and crashed[0].symbol == SYMBOL and crashed[0].to_ms is not None, stretches
    # From the newest event time Kafka acknowledged before the kill, as saved, to the first event captured after.
    assert crashed[0].from_ms == saved["delivered_ms"][SYMBOL] and crashed[0].from_ms in {m["E"] for m in runs[0]}
    assert crashed[0].to_ms in {m["E"] for m in runs[1]} and crashed[0].to_ms > max(m["E"] for m in runs[0])
    assert [s.reason for s in stretches if s.to_ms is None] == ["producer stopped"]  # the clean stop at the end
    assert read_state(speed_dir)["stopped"] is True
    # Every minute whose final candle is not in Kafka lies inside the recorded stretch.
    finals = final_klines(klines)
    have = {int(t.timestamp() * 1000) for t in finals["open_time"]}
    missing = [m for m in range(min(have), max(have), MINUTE_MS) if m not in have]
    assert len(missing) >= 3, "three seconds without a producer at 120x lose several minutes"
    _covered(missing, crashed)
