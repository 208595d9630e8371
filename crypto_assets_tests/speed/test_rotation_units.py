"""The pieces of the broker's topic rotation without a broker: the note, the checkpoint check, the planning."""

from __future__ import annotations

import json
import time

from streaming_sensor.checkpoint import committed_end
from streaming_sensor.kafka_source import RESET_FROM, ROTATED, TOPIC_IDS, canonical, offset_ranges, plan_batch
from streaming_sensor.trim import PENDING_SECONDS, read_through, rotated_ends, rotation_pending


def note(to_id: str | None, ends: dict[str, int], started_at: float | None = None) -> dict:
    return {"started_at": started_at or time.time(), "topics": {"t": {"from_id": "A", "to_id": to_id, "ends": ends}}}


def test_a_rotated_topic_read_to_its_end_starts_over_with_no_loss_and_anything_else_is_still_a_loss():
    start = canonical({"t": {"0": 10, "1": 7}}, {"t": "A"})
    lows, highs = {"t": {"0": 0, "1": 0}}, {"t": {"0": 3, "1": 0}}

    rotated, losses = plan_batch(start, lows, highs, {"t": "B"}, set(), note=note("B", {"0": 10, "1": 7}))
    assert losses == [] and RESET_FROM not in rotated
    assert rotated[ROTATED] == {"t": {"0": 0, "1": 0}} and rotated[TOPIC_IDS] == {"t": "B"}
    assert [(r.partition, r.start, r.end) for r in offset_ranges(start, rotated, "x")] == [(0, 0, 3)]

    # The old topic held records the stream had not read: that is data loss, note or not.
    behind, losses = plan_batch(start, lows, highs, {"t": "B"}, set(), note=note("B", {"0": 12, "1": 7}))
    assert [loss[1] for loss in losses] == ["0"] and behind[RESET_FROM] == {"t": {"0": 0}}
    assert behind[ROTATED] == {"t": {"1": 0}}
    # A topic re-created into another id than the rotation made (the broker restarted since) lost data too.
    _, losses = plan_batch(start, lows, highs, {"t": "C"}, set(), note=note("B", {"0": 10, "1": 7}))
    assert len(losses) == 2 and all("re-created" in loss[4] for loss in losses)


def test_a_rotation_under_way_is_waited_for_only_while_it_is_fresh():
    assert rotation_pending(note(None, {"0": 1}), {"t": "A"})
    assert not rotation_pending(note("B", {"0": 1}), {"t": "A"})  # done
    assert not rotation_pending(note(None, {"0": 1}), {"t": "B"})  # of another topic generation
    stale = note(None, {"0": 1}, started_at=time.time() - PENDING_SECONDS - 1)
    assert not rotation_pending(stale, {"t": "A"})  # the producer died midway: not waited for forever
    assert rotated_ends(note("B", {"0": 4}), "t", "A", "B") == {"0": 4}
    assert rotated_ends(note("B", {"0": 4}), "t", "B", "C") is None


def test_the_topics_count_as_read_only_when_the_committed_batch_covers_every_record_of_the_same_topic(tmp_path):
    checkpoint = tmp_path / "cp"
    assert committed_end(checkpoint) == {}
    for batch_id, offsets in enumerate([{"t": {"0": 5, "1": 2}}, {"t": {"0": 9, "1": 2}}]):
        (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
        body = canonical(offsets, {"t": "A"})
        (checkpoint / "offsets" / str(batch_id)).write_text(f"v1\n{{}}\n{json.dumps(body)}\n")
    (checkpoint / "commits").mkdir()
    (checkpoint / "commits" / "0").write_text("v1\n{}\n")  # batch 1 is planned, not committed

    committed = committed_end(checkpoint)
    assert committed["t"] == {"0": 5, "1": 2}
    assert read_through(committed, {"t": {"0": 5, "1": 2, "2": 0}}, {"t": "A"})
    assert not read_through(committed, {"t": {"0": 9, "1": 2}}, {"t": "A"})
    assert not read_through(committed, {"t": {"0": 5, "1": 2}}, {"t": "B"})  # offsets of another topic
    (checkpoint / "commits" / "1").write_text("v1\n{}\n")
    assert read_through(committed_end(checkpoint), {"t": {"0": 9, "1": 2}}, {"t": "A"})
