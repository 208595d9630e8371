"""The stream job's stop falls between micro-batches: the running batch finishes its writes, and a batch that
begins after the stop writes nothing (it is not committed, so Spark runs it again at the next start)."""

from __future__ import annotations

import threading

import pytest

from streaming_sensor.stream_job import StopGate, StopRequested


def test_a_stop_waits_for_the_running_batch_and_a_later_batch_writes_nothing():
    gate = StopGate()
    inside, release, written = threading.Event(), threading.Event(), []

    def batch() -> None:
        with gate.batch():
            inside.set()
            release.wait(10)
            written.append("batch 1")

    worker = threading.Thread(target=batch)
    worker.start()
    assert inside.wait(10)
    closing = threading.Thread(target=lambda: written.append(("closed", gate.close(10))))
    closing.start()
    closing.join(0.3)
    assert closing.is_alive(), "the stop must wait for the running batch"
    release.set()
    worker.join(10)
    closing.join(10)
    assert written == ["batch 1", ("closed", True)]

    with pytest.raises(StopRequested):
        with gate.batch():
            written.append("batch 2")
    assert written == ["batch 1", ("closed", True)]


def test_a_batch_that_outlasts_the_grace_is_reported():
    gate = StopGate()
    with gate.batch():
        assert gate.close(0.05) is False
