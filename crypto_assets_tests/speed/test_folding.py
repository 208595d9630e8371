"""The stream job's driver-side state and bookkeeping without Spark: CandleFolder snapshots, replays, restarts and
pruning; the checkpoint's binding to the micro-batch log; offsets of batches after Kafka lost data."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.lake.microbatch_log import batch_file, read_records
from streaming_sensor.batch_writer import BatchWriter, LogMismatch
from streaming_sensor.folding import KEEP_SNAPSHOTS, CandleFolder, snapshot_ids, state_dir
from streaming_sensor.kafka_source import RESET_FROM, TOPIC_IDS, canonical, offset_ranges, split_limit
from streaming_sensor.stream_job import batch_offsets, batch_reset, bind_log

M = 60_000
T0 = int(datetime(2021, 3, 26, 23, 50, tzinfo=UTC).timestamp() * 1000)  # the stream crosses midnight
DELAY = 2 * M
EVENT_SCHEMA = {
    "kind": pl.String,
    "symbol": pl.String,
    "minute_ms": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "is_closed": pl.Boolean,
    "event_ms": pl.Int64,
    "topic": pl.String,
    "partition": pl.Int32,
    "offset": pl.Int64,
    "reason": pl.String,
    "raw": pl.String,
}


def market_events(symbols=("BTCUSDT", "ETHUSDT"), minutes=20, seed=7) -> list[dict]:
    """Kline updates every 2 s (final one at the minute's end) and trades in between, like the exchange's."""
    rng = random.Random(seed)
    events, offsets = [], {"kline": 0, "trade": 0}
    for symbol in symbols:
        price = 100.0 if symbol == "BTCUSDT" else 10.0
        for m in range(minutes):
            minute = T0 + m * M
            o = h = lo = c = price
            v = 0.0
            for second in range(0, 60, 2):
                for _ in range(rng.randint(0, 3)):
                    p, q = round(price * (1 + rng.uniform(-0.002, 0.002)), 4), round(rng.uniform(0.01, 1.0), 4)
                    when = minute + second * 1000 + rng.randint(0, 1999)
                    h, lo, c, v = max(h, p), min(lo, p), p, v + q
                    events.append(("trade", symbol, minute, p, p, p, p, q, False, when))
                events.append(("kline", symbol, minute, o, h, lo, c, v, second == 58, minute + second * 1000 + 1999))
            price = c
    rng.shuffle(events)  # arrival order is not event order; the folder orders them
    rows = []
    for kind, symbol, minute, o, h, lo, c, v, closed, when in sorted(events, key=lambda e: e[9] + rng.randint(0, 500)):
        offsets[kind] += 1
        rows.append(
            {
                "kind": kind,
                "symbol": symbol,
                "minute_ms": minute,
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": v,
                "is_closed": closed,
                "event_ms": when,
                "topic": f"t.{kind}",
                "partition": 0,
                "offset": offsets[kind],
                "reason": None,
                "raw": None,
            }
        )
    return rows


def batches(rows: list[dict], count: int) -> list[pl.DataFrame]:
    size = -(-len(rows) // count)
    return [pl.DataFrame(rows[i : i + size], schema=EVENT_SCHEMA) for i in range(0, len(rows), size)]


def bad_row(offset: int) -> dict:
    return {
        **dict.fromkeys(EVENT_SCHEMA),
        "topic": "t.trade",
        "partition": 0,
        "offset": offset,
        "reason": "value: not a JSON stream message",
        "raw": "{oops",
    }


def fold_all(folder: CandleFolder, frames: list[pl.DataFrame], first: int = 0) -> list[pl.DataFrame]:
    out = []
    for batch_id, frame in enumerate(frames[first:], start=first):
        rows, _ = folder.fold(batch_id, frame)
        folder.commit(batch_id)
        out.append(rows)
    return out


@pytest.fixture(scope="module")
def frames() -> list[pl.DataFrame]:
    return batches(market_events(), 12)


def test_a_replay_of_a_batch_whose_snapshot_was_written_before_sparks_commit_gives_identical_rows(tmp_path, frames):
    folder = CandleFolder(tmp_path / "state", DELAY)
    first = fold_all(folder, frames[:4])
    assert 4 - 1 in snapshot_ids(tmp_path / "state")  # batch 3 snapshotted, then "killed" before Spark's commit

    restarted = CandleFolder(tmp_path / "state", DELAY)
    restarted.reconcile(last_planned=3, last_committed=2)
    again, _ = restarted.fold(3, frames[3])
    assert again.equals(first[3]) and again.height > 0
    restarted.commit(3)
    # the same replay inside one process (the in-memory state is after batch 3, batch 3 comes again)
    assert folder.fold(3, frames[3])[0].equals(first[3])


def test_a_replay_of_a_batch_killed_before_its_snapshot_gives_identical_rows(tmp_path, frames):
    folder = CandleFolder(tmp_path / "state", DELAY)
    first = fold_all(folder, frames[:3])
    rows, _ = folder.fold(3, frames[3])  # files written, killed before the snapshot
    restarted = CandleFolder(tmp_path / "state", DELAY)
    restarted.reconcile(last_planned=3, last_committed=2)
    assert restarted.fold(3, frames[3])[0].equals(rows)
    assert [r.height for r in first] == [
        r.height for r in fold_all(CandleFolder(tmp_path / "other", DELAY), frames[:3])
    ]


def test_restarts_from_snapshots_at_every_batch_give_the_rows_of_an_uninterrupted_fold(tmp_path, frames):
    uninterrupted = fold_all(CandleFolder(tmp_path / "once", DELAY), frames)
    restarted = []
    for batch_id, frame in enumerate(frames):
        folder = CandleFolder(tmp_path / "restarting", DELAY)  # a new process for every batch
        folder.reconcile(last_planned=batch_id, last_committed=batch_id - 1 if batch_id else None)
        rows, _ = folder.fold(batch_id, frame)
        folder.commit(batch_id)
        restarted.append(rows)
    assert all(a.equals(b) for a, b in zip(uninterrupted, restarted, strict=True))
    candles = pl.concat(uninterrupted).filter(pl.col("kind") == "candle")
    # every minute of both symbols is written, and each one's last row is its final candle
    finals = candles.sort("event_time").unique(["symbol", "open_time"], keep="last")
    assert finals.height == 2 * 20 and finals["is_closed"].all()
    assert pl.concat(uninterrupted).filter(pl.col("kind") == "daily")["date"].n_unique() == 2


def test_pruning_keeps_the_newest_snapshots_and_a_replay_still_finds_its_state(tmp_path, frames):
    directory = tmp_path / "state"
    folder = CandleFolder(directory, DELAY)
    rows = fold_all(folder, frames)
    last = len(frames) - 1
    assert snapshot_ids(directory) == list(range(last - KEEP_SNAPSHOTS + 1, last + 1))
    replay = CandleFolder(directory, DELAY)
    replay.reconcile(last_planned=last, last_committed=last - 1)
    assert replay.fold(last, frames[last])[0].equals(rows[last])


def test_snapshots_of_a_reset_checkpoint_never_feed_or_delete_the_new_runs_state(tmp_path, frames):
    directory = tmp_path / "state"
    fold_all(CandleFolder(directory, DELAY), frames)  # an old run reached batch 11
    old = snapshot_ids(directory)
    # Spark's checkpoint was reset: no batch planned. The start-up reconciliation removes the old snapshots...
    folder = CandleFolder(directory, DELAY)
    folder.reconcile(last_planned=None, last_committed=None)
    assert snapshot_ids(directory) == []
    fresh = fold_all(folder, frames[:3])
    assert fresh[0].equals(fold_all(CandleFolder(tmp_path / "clean", DELAY), frames[:1])[0])
    # ...and even without it, committing batch 0 never prunes batch 0 because higher ids are lying around.
    for batch_id in old:
        (directory / f"{batch_id:012d}.json").write_text("{}")
    unreconciled = CandleFolder(directory, DELAY)
    unreconciled.fold(0, frames[0])
    unreconciled.commit(0)
    assert snapshot_ids(directory) == [0]
    assert unreconciled.fold(1, frames[1])[0].equals(fresh[1])


def test_bad_rows_pass_through_and_never_stop_the_fold(tmp_path, frames):
    mixed = pl.concat([frames[0], pl.DataFrame([bad_row(10**6)], schema=EVENT_SCHEMA)])
    rows, _ = CandleFolder(tmp_path / "state", DELAY).fold(0, mixed)
    bad = rows.filter(pl.col("kind") == "bad")
    assert bad["offset"].to_list() == [10**6] and bad["reason"][0].endswith("| value: {oops")
    assert rows.filter(pl.col("kind") == "candle").height > 0


def test_after_kafka_lost_data_each_symbol_gets_one_stretch_from_its_last_event_to_its_first_newer_one(
    tmp_path, frames
):
    folder = CandleFolder(tmp_path / "state", DELAY)
    fold_all(folder, frames[:2])
    before = {s: b.max_event_ms for s, b in folder._state.books.items()}
    lost = frames[3]  # batch 2's events never reached the stream; batch 3's did, and only BTCUSDT's at first
    btc = lost.filter(pl.col("symbol") == "BTCUSDT")
    resent = frames[1].filter(pl.col("symbol") == "BTCUSDT").tail(3)  # re-sent after the loss: older than the loss
    rows, closed = folder.fold(2, pl.concat([resent, btc]), "kafka-reset-b2")
    assert [(g.id, g.symbol, g.from_ms, g.to_ms) for g in closed] == [
        ("kafka-reset-b2-BTCUSDT", "BTCUSDT", before["BTCUSDT"], btc["event_ms"].min())
    ]
    folder.commit(2)
    replayed = CandleFolder(tmp_path / "state", DELAY)  # a replay of batch 2 gives the same stretch, same id
    assert replayed.fold(2, pl.concat([resent, btc]), "kafka-reset-b2")[1] == closed
    # ETHUSDT's stretch waits (in the snapshot, across a restart) for its first newer event
    restarted = CandleFolder(tmp_path / "state", DELAY)
    restarted.reconcile(last_planned=3, last_committed=2)
    eth = lost.filter(pl.col("symbol") == "ETHUSDT")
    _, later = restarted.fold(3, eth)
    assert [(g.id, g.from_ms, g.to_ms) for g in later] == [
        ("kafka-reset-b2-ETHUSDT", before["ETHUSDT"], eth["event_ms"].min())
    ]
    restarted.commit(3)
    assert CandleFolder(tmp_path / "state", DELAY).fold(4, frames[4])[1] == []


# -- offsets, the checkpoint and the micro-batch log ----------------------------------------------------------


def write_offsets(checkpoint: Path, batch_id: int, offsets: dict) -> None:
    path = checkpoint / "offsets" / str(batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("v1\n" + json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": 0}) + "\n" + json.dumps(offsets))


def test_read_limits_follow_each_partitions_backlog_like_sparks_kafka_source():
    start = {"kline": {"0": 0}, "trade": {"0": 100}}
    latest = {"kline": {"0": 300}, "trade": {"0": 1100}, "empty": {"0": 5}}
    ends = split_limit(start, latest, 130)
    # 300 : 1000 : 5 of backlog -> about 29 : 99 : 1 (every partition with a backlog moves)
    assert ends == {"kline": {"0": 29}, "trade": {"0": 199}, "empty": {"0": 1}}
    assert split_limit(start, latest, 10_000) == latest
    ranges = offset_ranges(canonical(start), canonical(ends, {"kline": "A"}), "x:1")
    assert [(r.topic, r.partition, r.start, r.end, r.topic_id) for r in ranges] == [
        ("empty", 0, 0, 1, None),
        ("kline", 0, 0, 29, "A"),
        ("trade", 0, 100, 199, None),
    ]


def test_a_batch_after_data_loss_reads_and_logs_from_the_reset_point(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    write_offsets(checkpoint, 4, canonical({"t": {"0": 500, "1": 70}}, {"t": "old"}))
    reset = canonical({"t": {"0": 30, "1": 90}}, {"t": "new"}, {"t": {"0": 0}})
    write_offsets(checkpoint, 5, reset)
    assert batch_offsets(checkpoint, 5) == {"t": {"0": [0, 30], "1": [70, 90]}}
    assert batch_reset(checkpoint, 5) == {"t": {"0": 0}} and batch_reset(checkpoint, 4) == {}
    assert [
        (r.partition, r.start, r.end)
        for r in offset_ranges(json.loads(json.dumps(canonical({"t": {"0": 500, "1": 70}}))), reset, "x")
    ] == [
        (0, 0, 30),
        (1, 70, 90),
    ]
    assert TOPIC_IDS in reset and RESET_FROM in reset and list(reset)[:1] == ["t"]


def _rows(minute: int) -> pl.DataFrame:
    when = datetime(2021, 3, 26, 3, minute, tzinfo=UTC)
    return pl.DataFrame(
        {
            "kind": ["candle"],
            "symbol": ["BTCUSDT"],
            "open_time": [when],
            "open": [1.0],
            "high": [2.0],
            "low": [0.5],
            "close": [1.5],
            "volume": [3.0],
            "is_closed": [True],
            "event_time": [when],
        }
    )


def test_every_batch_is_logged_even_with_no_rows_and_a_log_of_another_checkpoint_is_refused(tmp_path):
    lake, speed = tmp_path / "lake", tmp_path / "speed"
    writer = BatchWriter(lake, speed)
    writer.write(_rows(0), 0, {"t": {"0": [0, 5]}})
    empty = writer.write(pl.DataFrame(), 1, {"t": {"0": [5, 9]}})  # every event late, bad or superseded
    assert empty.rows == {"candles_1m": 0, "daily": 0} and empty.max_event_time is None
    assert pl.read_parquet(batch_file(lake, "candles_1m", 1)).height == 0
    assert [r.batch_id for r in read_records(lake)] == [0, 1]
    restarted = BatchWriter(lake, speed)
    assert restarted.write(pl.DataFrame(), 1, {"t": {"0": [5, 9]}}) == empty  # a replay: logged once
    with pytest.raises(LogMismatch, match="another checkpoint"):
        BatchWriter(lake, speed).write(_rows(1), 1, {"t": {"0": [0, 3]}})  # same id, other offsets
    with pytest.raises(LogMismatch):
        BatchWriter(lake, speed).write(_rows(1), 0, {"t": {"0": [0, 5]}})  # behind the log
    assert [r.batch_id for r in read_records(lake)] == [0, 1]


def test_a_reset_checkpoint_logs_its_batches_after_the_existing_log_and_a_log_ahead_of_its_checkpoint_stops(tmp_path):
    lake, speed = tmp_path / "lake", tmp_path / "speed"
    writer = BatchWriter(lake, speed)
    for batch_id in range(3):
        writer.write(_rows(batch_id), batch_id, {"t": {"0": [batch_id, batch_id + 1]}})
    old = tmp_path / "old-checkpoint"
    write_offsets(old, 0, {"t": {"0": 1}})
    write_offsets(old, 2, {"t": {"0": 3}})
    assert bind_log(old, lake) == 0  # a checkpoint from before the binding: its batches are the log's ids

    fresh = tmp_path / "checkpoint"  # the checkpoint was deleted: Spark starts again at batch 0
    fresh.mkdir()
    assert bind_log(fresh, lake) == 3
    write_offsets(fresh, 0, {"t": {"0": 1}})
    assert bind_log(fresh, lake) == 3  # the binding stays with the checkpoint
    assert state_dir(fresh).parent == fresh  # the candle state is inside the checkpoint and goes with it

    ahead = tmp_path / "ahead"
    write_offsets(ahead, 0, {"t": {"0": 1}})
    (ahead / "speed_log.json").write_text('{"first_log_id": 0}')
    with pytest.raises(LogMismatch, match="another checkpoint"):
        bind_log(ahead, lake)


def test_planning_goes_on_from_the_earliest_offset_after_each_kind_of_data_loss_and_never_moves_back_otherwise():
    from streaming_sensor.kafka_source import plan_batch

    start = canonical({"t": {"0": 10, "1": 10, "2": 10, "3": 10}, "gone": {"0": 4}}, {"t": "A"})
    lows = {"t": {"0": 0, "1": 0, "2": 15, "3": 0, "4": 7}}
    highs = {"t": {"0": 20, "1": 5, "2": 30, "3": 6, "4": 9}}
    certain = {("t", "1")}  # partition 3's end was not confirmed by a fetch: it may just be listed short
    end, losses = plan_batch(start, lows, highs, {"t": "A"}, certain)
    assert end == {
        "gone": {"0": 4},  # not listed now: stays where it was
        "t": {"0": 20, "1": 5, "2": 30, "3": 10, "4": 9},
        TOPIC_IDS: {"t": "A"},
        RESET_FROM: {"t": {"1": 0, "2": 15, "4": 7}},
    }
    assert [(p, previous, low) for _, p, previous, low, _ in losses] == [("1", 10, 0), ("2", 10, 15), ("4", 0, 7)]
    assert "below the checkpointed position" in losses[0][4] and "retention" in losses[1][4]

    # The topic was re-created (new id): every partition starts again at its earliest offset, even one whose
    # new end is already past the old position; a read limit is shared over the new backlogs.
    again, losses = plan_batch(end, {"t": {"0": 0, "1": 0}}, {"t": {"0": 50, "1": 50}}, {"t": "B"}, set(), max_rows=20)
    assert again[RESET_FROM] == {"t": {"0": 0, "1": 0}} and again[TOPIC_IDS] == {"t": "B"}
    assert (again["t"]["0"], again["t"]["1"]) == (10, 10) and all("re-created" in loss[4] for loss in losses)
    assert offset_ranges(end, again, "x")[0].start == 0

    # Nothing new: the same offsets, in the same order, so Spark sees no new data.
    same, losses = plan_batch(again, {"t": {"0": 0, "1": 0}}, {"t": {"0": 10, "1": 10}}, {"t": "B"}, set())
    assert losses == [] and json.dumps(same) == json.dumps({k: v for k, v in again.items() if k != RESET_FROM})
