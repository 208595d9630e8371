"""End to end on real parts: replay server (recorded Binance minutes) -> producer -> Tansu -> Spark stream job
-> speed-layer files; then the same Kafka topics again with the stream job SIGKILLed at random points."""

from __future__ import annotations

import json
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.microbatch_log import CANDLES_1M, DAILY, batch_file, latest_batch_id, read_records
from crypto_assets.lake.missed import read_stretches
from crypto_assets.serving.processes import free_port
from crypto_assets_tests.speed.binance_messages import recorded_candles
from crypto_assets_tests.speed.harness import (
    SYMBOL,
    TRACEBACK_MARKS,
    caught_up,
    embedded_broker,
    kafka_ends,
    producer_thread,
    sigkill_job,
    speed_config,
    speed_view,
    start_stream,
    stop_group,
    stop_process,
    wait_caught_up,
)
from streaming_sensor.broker import start_broker, topic_name
from streaming_sensor.kafka_source import TOPIC_IDS, KafkaStreamReader, positions
from streaming_sensor.producer import ProducerOptions

PREFIX = "e2e"
START = datetime(2021, 3, 26, 23, 45, tzinfo=UTC)  # crosses midnight: two daily rows
SPEED = 120.0  # two replayed minutes per second
REPLAY_SECONDS = 12.0
TOPICS = [topic_name(PREFIX, "kline_1m"), topic_name(PREFIX, "trade")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole pipeline live, the stream job running while the replay plays; returns what it wrote."""
    home = tmp_path_factory.mktemp("uninterrupted")
    market = Market.from_sources([str(shared_data / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv")], [SYMBOL])
    with embedded_broker(topics=TOPICS, partitions=3) as broker:
        config = speed_config(home, broker.bootstrap_servers, PREFIX)
        log_path = home / "stream.log"
        stops = []  # (exit code, the run's output) of each SIGTERM to the stream job's process group
        stream = start_stream(config, log_path, new_session=True)
        try:
            with ReplayServer(market, start=START, speed=SPEED) as replay:
                options = ProducerOptions(
                    symbols=[SYMBOL],
                    ws_url=replay.ws_url,
                    bootstrap_servers=broker.bootstrap_servers,
                    topic_prefix=PREFIX,
                    stats_seconds=5,
                )
                with producer_thread(options, home / "speed") as producer:
                    time.sleep(REPLAY_SECONDS)
                counters = producer.counters
            ends = kafka_ends(broker.bootstrap_servers, TOPICS)
            wait_caught_up(stream, home / "speed" / "checkpoints" / "speed_candles", ends, 180, log_path)
        finally:
            if stream.poll() is None:
                stops.append((stop_group(stream), log_path.read_text()))
        candles, daily = speed_view(home / "lake")
        yield {
            "broker": broker,
            "ends": ends,
            "candles": candles,
            "daily": daily,
            "home": home,
            "counters": counters,
            "stops": stops,
        }


def test_sigterm_to_the_stream_jobs_group_stops_it_cleanly(pipeline):
    """As `down` or Ctrl-C stop it once caught up: exit code 0 and no traceback (mid-stream: the SIGKILL test)."""
    assert len(pipeline["stops"]) == 1
    for code, output in pipeline["stops"]:
        assert code == 0, output[-4000:]
        assert not any(mark in output for mark in TRACEBACK_MARKS), output[-4000:]
        assert output.rstrip().endswith("stopped"), output[-4000:]


def test_stream_candles_equal_the_recorded_candles(pipeline, shared_data):
    candles, counters = pipeline["candles"], pipeline["counters"]
    assert counters.published > 500 and counters.dropped == 0 and counters.malformed == 0
    closed = candles.filter(pl.col("is_closed"))
    assert closed.height >= 15, closed
    recorded = recorded_candles(shared_data, SYMBOL, 2021, START.replace(tzinfo=None), 60)
    first, last = closed["open_time"].min(), closed["open_time"].max()
    expected = recorded.filter(pl.col("open_time").is_between(first, last))
    got = closed.select(expected.columns)
    assert got.equals(expected), (got, expected)
    # every minute after the first closed one is there; at most the last one is still open
    assert candles.filter(~pl.col("is_closed"))["open_time"].to_list() in (
        [],
        [last + (expected["open_time"][1] - first)],
    )


def test_daily_rows_aggregate_the_candles_like_the_batch_layer(pipeline):
    candles, daily = pipeline["candles"], pipeline["daily"]
    expected = aggregate_daily(candles.lazy()).collect()
    assert daily.select(expected.columns).equals(expected)
    assert daily["date"].n_unique() == 2


def test_missed_stretch_recorded_when_the_producer_stopped(pipeline):
    stretches = read_stretches(pipeline["home"] / "speed")
    assert [(s.symbol, s.reason, s.to_ms) for s in stretches] == [(SYMBOL, "producer stopped", None)]


def _offset_ranges_cover(lake: Path, ends: dict) -> None:
    """Logged batches hold each Kafka offset exactly once: one record per batch id, disjoint ranges."""
    records = read_records(lake)
    ids = [r.batch_id for r in records]
    assert ids == list(range(ids[0], ids[-1] + 1)), f"every micro-batch is logged once: {ids}"
    for topic, parts in ends.items():
        for part, end in parts.items():
            spans = sorted(tuple(r.offsets[topic][part]) for r in records if r.offsets.get(topic, {}).get(part))
            spans = [s for s in spans if s[1] > s[0]]
            position = 0
            for start, stop in spans:
                assert start == position, (
                    f"{topic}[{part}]: gap or overlap at {position} (next batch starts at {start})"
                )
                position = stop
            assert position == end
    for record in records:
        for dataset in (CANDLES_1M, DAILY):
            assert pl.read_parquet(batch_file(lake, dataset, record.batch_id)).height == record.rows[dataset]


def _commits(checkpoint: Path) -> int:
    return len(list((checkpoint / "commits").glob("[0-9]*"))) if (checkpoint / "commits").is_dir() else 0


def test_sigkilled_stream_job_restarts_from_its_checkpoint_with_no_lost_or_duplicated_candles(pipeline, tmp_path):
    broker, ends = pipeline["broker"], pipeline["ends"]
    home = tmp_path / "crashing"
    # Small batches on a short trigger: the ~1,000 messages take ~50 micro-batches, so every kill lands while
    # batches are still pending, at a random point of the cycle (planning, reading, folding, writing files,
    # logging, snapshotting the candle state, Spark's commit).
    config = speed_config(home, broker.bootstrap_servers, PREFIX, trigger=0.2)
    checkpoint = home / "speed" / "checkpoints" / "speed_candles"
    log_path = home / "stream.log"
    rng = random.Random()
    small_batches = ("--max-offsets-per-trigger", "20")
    kills, logged_ahead = 0, 0
    for trial in range(3):
        before = _commits(checkpoint)
        process = start_stream(config, log_path, small_batches)
        deadline = time.monotonic() + 120
        while _commits(checkpoint) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # kill only once this run is processing batches
        assert process.poll() is None, f"trial {trial}: the stream job exited:\n{log_path.read_text()[-4000:]}"
        assert _commits(checkpoint) > before, f"trial {trial}: no batch committed in 120 s"
        if trial == 1:
            # Right after a log line, driver and JVM at once: before Spark's commit of that batch, maybe before
            # its state snapshot too.
            logged = latest_batch_id(home / "lake")
            while latest_batch_id(home / "lake") == logged and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 1.0))
        assert not caught_up(checkpoint, ends), (
            f"trial {trial}: the job caught up before the kill; the kill must land mid-stream"
        )
        sigkill_job(process, whole_tree=trial == 1)
        kills += 1
        newest_commit = max(int(p.name) for p in (checkpoint / "commits").glob("[0-9]*"))
        logged_ahead += latest_batch_id(home / "lake") > newest_commit  # the restart must replay a logged batch
    assert kills == 3
    # Stopped as `down` stops it, mid-stream: exit code 0, no traceback, and nothing lost (checked below).
    process = start_stream(config, log_path, small_batches, new_session=True)
    before, offset = _commits(checkpoint), log_path.stat().st_size
    deadline = time.monotonic() + 120
    while _commits(checkpoint) == before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    assert not caught_up(checkpoint, ends), "the job caught up before the stop; the stop must land mid-stream"
    code = stop_group(process)
    output = log_path.read_bytes()[offset:].decode(errors="replace")
    assert code == 0 and not any(mark in output for mark in TRACEBACK_MARKS), output[-4000:]
    assert output.rstrip().endswith("stopped"), output[-4000:]
    process = start_stream(config, log_path, small_batches)
    try:
        wait_caught_up(process, checkpoint, ends, 240, log_path)
    finally:
        stop_process(process)

    if logged_ahead:  # the replay rewrote that batch's files and did not log it twice (checked below too)
        assert "was already logged (replay after a restart)" in log_path.read_text()
    # Batches bounded by a message count still keep the two topics together in exchange time: nothing is late.
    assert "older than the watermark" not in log_path.read_text()
    _offset_ranges_cover(home / "lake", ends)
    candles, daily = speed_view(home / "lake")
    for got, uninterrupted in ((candles, pipeline["candles"]), (daily, pipeline["daily"])):
        assert got.drop("batch_id").equals(uninterrupted.drop("batch_id"))


def _ends_and_ids(bootstrap: str, topics: list[str]) -> tuple[dict, dict]:
    reader = KafkaStreamReader({"kafka.bootstrap.servers": bootstrap, "subscribe": ",".join(topics)})
    try:
        latest = reader.latestOffset({}, None)
    finally:
        reader.stop()
    return positions(latest), latest[TOPIC_IDS]


def _caught_up_on(checkpoint: Path, ends: dict, topic_ids: dict) -> bool:
    """Spark committed a batch of the topics with these ids that reaches ``ends``."""
    commits = sorted(int(p.name) for p in (checkpoint / "commits").glob("[0-9]*"))
    if not commits:
        return False
    lines = (checkpoint / "offsets" / str(commits[-1])).read_text().splitlines()
    offsets = json.loads(lines[-1])
    done = positions(offsets)
    return offsets.get(TOPIC_IDS) == topic_ids and all(
        done.get(t, {}).get(p, 0) >= end for t, parts in ends.items() for p, end in parts.items()
    )


def test_a_broker_restart_under_the_running_stream_job_is_logged_as_data_loss_and_recorded_as_a_missed_stretch(
    shared_data, tmp_path
):
    """Tansu keeps its log in memory: after a restart the topics are new (new ids) and their offsets start at
    0 again, below the checkpoint's. The running job goes on from the new earliest offsets, says so, and
    records the stretch it did not see; the producer's buffer carries what the old broker never acknowledged."""
    prefix = "restart"
    topics = [topic_name(prefix, "kline_1m"), topic_name(prefix, "trade")]
    market = Market.from_sources([str(shared_data / "binance_spot_1m" / "2021" / f"{SYMBOL}_1m.csv")], [SYMBOL])
    port = free_port()
    broker = start_broker(port, topics, 3)
    home, log_path = tmp_path / "home", tmp_path / "stream.log"
    checkpoint = home / "speed" / "checkpoints" / "speed_candles"
    config = speed_config(home, broker.bootstrap_servers, prefix)
    stream = start_stream(config, log_path)
    start = datetime(2021, 3, 26, 10, 0, tzinfo=UTC)
    try:
        with ReplayServer(market, start=start, speed=SPEED) as replay:
            options = ProducerOptions(
                symbols=[SYMBOL],
                ws_url=replay.ws_url,
                bootstrap_servers=broker.bootstrap_servers,
                topic_prefix=prefix,
                stats_seconds=5,
                backoff_initial=0.2,
            )
            with producer_thread(options, home / "speed") as producer:
                deadline = time.monotonic() + 180
                while _commits(checkpoint) < 3:  # the job is streaming batches when the broker goes
                    assert stream.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
                    time.sleep(0.2)
                broker.stop()
                deadline = time.monotonic() + 30
                while producer.broker_ok:
                    assert time.monotonic() < deadline, "the producer did not notice the broker going"
                    time.sleep(0.05)
                time.sleep(2.0)
                broker = start_broker(port, topics, 3)  # same address, empty topics
                deadline = time.monotonic() + 60
                while not producer.broker_ok or producer.buffer:
                    assert time.monotonic() < deadline, "the producer did not deliver its buffer to the new broker"
                    time.sleep(0.1)
                time.sleep(4.0)
            assert producer.counters.dropped == 0
        ends, new_ids = _ends_and_ids(broker.bootstrap_servers, topics)
        deadline = time.monotonic() + 180
        while not _caught_up_on(checkpoint, ends, new_ids):  # on the new topics: the old ones had higher offsets
            assert stream.poll() is None, f"the job exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"not caught up with the new topics:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.5)
        assert stream.poll() is None, "the job rode out the outage in one process"
    finally:
        stop_process(stream)
        broker.stop()

    text = log_path.read_text()
    assert "DATA LOSS" in text and "re-created" in text, text[-4000:]
    lost = [s for s in read_stretches(home / "speed") if s.reason == "kafka data lost"]
    assert [(s.symbol, s.from_ms < s.to_ms) for s in lost] == [(SYMBOL, True)], lost

    # The log: one line per batch, contiguous ranges on the old topics, then exactly one batch that starts
    # again at the new topics' earliest offsets and contiguous ranges from there to their ends.
    records = read_records(home / "lake")
    ids = [r.batch_id for r in records]
    assert ids == list(range(len(ids)))
    resets = [
        i
        for i in range(1, len(records))
        if any(
            span[0] < records[i - 1].offsets.get(t, {}).get(p, [0, 0])[1]
            for t, parts in records[i].offsets.items()
            for p, span in parts.items()
        )
    ]
    assert len(resets) == 1, [r.offsets for r in records]
    for topic, parts in ends.items():
        for part, end in parts.items():
            position = 0
            for record in records[resets[0] :]:
                span = record.offsets[topic][part]
                assert span[0] == position, (topic, part, record)
                position = span[1]
            assert position == end

    # Every final candle the stream wrote is the exchange's; a minute without one lies inside the stretch.
    candles, _ = speed_view(home / "lake")
    closed = candles.filter(pl.col("is_closed"))
    recorded = recorded_candles(shared_data, SYMBOL, 2021, start.replace(tzinfo=None), 400)
    assert closed.select(recorded.columns).join(recorded, on=recorded.columns, how="anti").height == 0
    minutes = {int(t.timestamp() * 1000) for t in closed["open_time"]}
    for minute in range(min(minutes), max(minutes), 60_000):
        if minute not in minutes:
            assert any(s.from_ms <= minute + 60_000 <= s.to_ms for s in lost), f"minute {minute} lost without a stretch"


def test_a_reset_checkpoint_logs_after_the_existing_log_and_leaves_its_batches_alone(pipeline, tmp_path):
    """Deleting the checkpoint (a reset) with the lake kept: the new run reads Kafka again from the earliest
    offsets, logs its batches after the newest logged id, and never rewrites the first run's files."""
    broker, ends = pipeline["broker"], pipeline["ends"]
    home = tmp_path / "reset"
    config = speed_config(home, broker.bootstrap_servers, PREFIX)
    checkpoint = home / "speed" / "checkpoints" / "speed_candles"
    log_path = home / "stream.log"
    lake = home / "lake"
    for run in range(2):
        process = start_stream(config, log_path, ("--max-offsets-per-trigger", "300"))
        try:
            wait_caught_up(process, checkpoint, ends, 240, log_path)
        finally:
            stop_process(process)
        if run == 0:
            first = read_records(lake)
            files = {r.batch_id: batch_file(lake, CANDLES_1M, r.batch_id).read_bytes() for r in first}
            shutil.rmtree(checkpoint)

    records = read_records(lake)
    second = records[len(first) :]
    assert [r.batch_id for r in records] == list(range(len(records))) and second
    assert second[0].batch_id == first[-1].batch_id + 1
    assert json.loads((checkpoint / "speed_log.json").read_text()) == {"first_log_id": second[0].batch_id}
    assert all(batch_file(lake, CANDLES_1M, i).read_bytes() == data for i, data in files.items())
    _offset_ranges_cover_from(second, ends)
    candles, daily = speed_view(lake)  # the second run's rows are the newest: still the uninterrupted result
    for got, uninterrupted in ((candles, pipeline["candles"]), (daily, pipeline["daily"])):
        assert got.drop("batch_id").equals(uninterrupted.drop("batch_id"))


def _offset_ranges_cover_from(records, ends: dict) -> None:
    for topic, parts in ends.items():
        for part, end in parts.items():
            position = 0
            for record in records:
                start, stop = record.offsets[topic][part]
                assert start == position, (topic, part, record)
                position = stop
            assert position == end
