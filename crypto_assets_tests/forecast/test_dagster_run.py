"""The CV process pool started from inside Dagster runs (in-process and multiprocess executors)."""

import pytest

dagster = pytest.importorskip("dagster")

from .dagster_cv_job import cv_job


@pytest.mark.integration  # the cross-validation process pool
def test_cv_pool_in_process_run() -> None:
    result = cv_job.execute_in_process()
    assert result.success
    assert result.output_for_node("run_cv") > 0


@pytest.mark.integration  # Dagster's multiprocess executor and the cross-validation pool
def test_cv_pool_in_multiprocess_executor_step(tmp_path) -> None:
    # Default executor: each step in its own subprocess, the pool nested inside it.
    with (
        dagster.DagsterInstance.local_temp(str(tmp_path)) as instance,
        dagster.execute_job(dagster.reconstructable(cv_job), instance=instance) as result,
    ):
        assert result.success
        assert result.output_for_node("run_cv") > 0
