"""The stream job's stop falls between micro-batches: the running batch finishes its writes, and a batch that
begins after the stop writes nothing (it is not committed, so Spark runs it again at the next start)."""

from __future__ import annotations

import logging
import threading

import pytest

from streaming_sensor.commands import _quiet_py4j_retries
from streaming_sensor.stream_job import PY4J_CALLBACK_LOGGER, StopGate, StopRequested, quiet_abandoned_batches


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


def _log_raised(logger: logging.Logger, error: Exception) -> None:
    try:
        raise error
    except Exception:
        logger.exception("There was an exception while executing the Python Proxy on the Python Side.")


def test_an_abandoned_batch_is_not_logged_as_a_failure_but_a_real_failure_is(caplog):
    """py4j logs what a foreachBatch call raises; the stop's StopRequested is no failure, anything else is."""
    quiet_abandoned_batches()
    callback_log = logging.getLogger(PY4J_CALLBACK_LOGGER)
    with caplog.at_level(logging.INFO):
        _log_raised(callback_log, StopRequested("stopping"))
        _log_raised(callback_log, ValueError("a real failure"))
    assert [r.exc_info[1].__class__ for r in caplog.records] == [ValueError]


def test_py4j_retries_stay_out_of_the_log_and_its_errors_stay_in():
    """py4j logs a retried command on the root logger at INFO with a traceback, a failed retry at ERROR."""
    import py4j.java_gateway

    def record(level: int, pathname: str) -> logging.LogRecord:
        return logging.LogRecord("root", level, pathname, 1, "Exception while sending command.", (), None)

    assert not _quiet_py4j_retries(record(logging.INFO, py4j.java_gateway.__file__))
    assert _quiet_py4j_retries(record(logging.ERROR, py4j.java_gateway.__file__))
    assert _quiet_py4j_retries(record(logging.INFO, __file__))
