"""Bounded for weeks, on real parts: the producer rotates the embedded Tansu broker's topics after a few
hundred KB (the broker frees their memory, the stream reads on with nothing lost), and the stream job's
checkpoint keeps a fixed number of batches however many it runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.missed import read_stretches
from crypto_assets_tests.speed.binance_messages import recorded_candles
from crypto_assets_tests.speed.harness import (
    SYMBOL,
    embedded_broker,
    kafka_ends,
    producer_thread,
    speed_config,
    speed_view,
    start_stream,
    stop_group,
    wait_caught_up,
)
from streaming_sensor.broker import topic_name
from streaming_sensor.checkpoint import batch_ids, checkpoint_path
from streaming_sensor.folding import KEEP_SNAPSHOTS, snapshot_ids, state_dir
from streaming_sensor.kafka_source import TOPIC_IDS, KafkaStreamReader
from streaming_sensor.producer import ProducerOptions

PREFIX = "bound"
START = datetime(2021, 3, 26, 22, 0, tzinfo=UTC)
SPEED = 120.0  # two replayed minutes per second
REPLAY_SECONDS = 30.0
TRIM_BYTES = 150_000  # a rotation every few seconds of replay
CHECKPOINT_BATCHES = 10
TOPICS = [topic_name(PREFIX, "kline_1m"), topic_name(PREFIX, "trade")]

pytestmark = pytest.mark.slow


def topic_ids_now(bootstrap: str) -> dict[str, str]:
    reader = KafkaStreamReader({"kafka.bootstrap.servers": bootstrap, "subscribe": ",".join(TOPICS)})
    try:
        return reader.latestOffset({}, None)[TOPIC_IDS]
    finally:
        reader.stop()


def broker_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def test_rotated_topics_free_the_brokers_records_and_the_stream_still_reads_every_message(shared_data, tmp_path):
    home = tmp_path / "home"
    market = Market.from_sources([str(shared_data / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv")], [SYMBOL])
    with embedded_broker(topics=TOPICS, partitions=3) as broker:
        config = speed_config(home, broker.bootstrap_servers, PREFIX, trigger=0.5)
        config.write_text(
            config.read_text().replace("[stream]\n", f"[stream]\ncheckpoint_batches = {CHECKPOINT_BATCHES}\n")
        )
        first_ids = topic_ids_now(broker.bootstrap_servers)
        log_path = home / "stream.log"
        checkpoint = checkpoint_path(home / "speed")
        stream = start_stream(config, log_path, new_session=True)
        try:
            with ReplayServer(market, start=START, speed=SPEED) as replay:
                options = ProducerOptions(
                    symbols=[SYMBOL],
                    ws_url=replay.ws_url,
                    bootstrap_servers=broker.bootstrap_servers,
                    topic_prefix=PREFIX,
                    trim_bytes=TRIM_BYTES,
                    trim_wait_seconds=60.0,
                    trim_retry_seconds=1.0,
                )
                with producer_thread(options, home / "speed") as producer:
                    deadline = time.monotonic() + 300
                    while time.monotonic() < deadline and (
                        producer.rotations < 3
                        or (batch_ids(checkpoint, "commits") or [-1])[-1] < 3 * CHECKPOINT_BATCHES
                    ):
                        time.sleep(0.5)
                    time.sleep(2.0)  # messages after the last rotation too
                counters, rotations = producer.counters, producer.rotations
            ends = kafka_ends(broker.bootstrap_servers, TOPICS)
            wait_caught_up(stream, checkpoint, ends, 180, log_path)
            held = sum(sum(parts.values()) for parts in ends.values())
            rss_kb = broker_rss_kb(broker.process.pid)
        finally:
            code = stop_group(stream)
        output = log_path.read_text()
        assert code == 0, output[-4000:]

        # The broker holds only what came after the last rotation: the topics are new ones, restarted at 0.
        assert rotations >= 3, output[-4000:]
        assert counters.dropped == 0 and counters.published > held > 0, (counters, held)
        assert all(topic_ids_now(broker.bootstrap_servers)[t] != first_ids[t] for t in TOPICS)
        print(f"broker RSS {rss_kb} kB after {counters.published} messages, {held} still held")

    # Nothing lost: no data loss was seen, and the candles are the recorded ones, minute by minute.
    assert "DATA LOSS" not in output, output[-4000:]
    assert [s.reason for s in read_stretches(home / "speed")] == ["producer stopped"]
    candles, _ = speed_view(home / "lake")
    closed = candles.filter(pl.col("is_closed"))
    recorded = recorded_candles(shared_data, SYMBOL, 2021, START.replace(tzinfo=None), 24 * 60)
    first, last = closed["open_time"].min(), closed["open_time"].max()
    expected = recorded.filter(pl.col("open_time").is_between(first, last))
    assert closed.height >= 30 and closed.select(expected.columns).equals(expected)

    # The checkpoint keeps its last batches only, however many ran.
    planned = batch_ids(checkpoint, "offsets")
    assert planned[-1] >= 3 * CHECKPOINT_BATCHES, planned
    for log in ("offsets", "commits"):
        assert len(batch_ids(checkpoint, log)) <= CHECKPOINT_BATCHES + 2, (log, batch_ids(checkpoint, log))
    assert len(snapshot_ids(state_dir(checkpoint))) <= KEEP_SNAPSHOTS
