"""A batch run on an ``s3://`` lake SIGKILLed at a random point, then run again: the lake ends exactly as an
uninterrupted run leaves it (nothing lost, nothing duplicated, no stray object), whoever held the lock."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_assets.lake.object_lock import LEASE_VARIABLE
from crypto_assets_tests.conftest import write_config
from crypto_assets_tests.killing import sigkill_after_start
from crypto_assets_tests.object_store.test_batch_graph_on_s3 import FIRST, LAST, local_files, remote_files, run_graph
from crypto_assets_tests.s3 import apply_environment, make_bucket

RUN = """
import sys
from pathlib import Path
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at
settings = load_settings()
with instance_at(Path(sys.argv[1])) as instance:
    print("started", flush=True)
    materialize_batch_range(instance, settings, sys.argv[2], sys.argv[3])
"""


@pytest.fixture(scope="module")
def monkeypatch_module(s3_endpoint):
    with pytest.MonkeyPatch.context() as patch:
        apply_environment(s3_endpoint, patch.setenv)
        patch.setenv("CRYPTO_ASSETS_SYNTHETIC_SCALE", "tiny")
        yield patch


@settings(
    max_examples=int(os.environ.get("KILL_EXAMPLES", "4")), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(delay=st.floats(0.5, 4.0))  # the run writes its first objects after about a second
def test_a_run_killed_at_any_point_then_rerun_leaves_the_lake_an_uninterrupted_run_leaves(
    tmp_path_factory, monkeypatch_module, s3_endpoint, delay
):
    root = tmp_path_factory.mktemp("killed")
    monkeypatch_module.delenv("CRYPTO_ASSETS_LAKE", raising=False)
    expected = reference_lake(tmp_path_factory, monkeypatch_module)

    bucket = f"killed-{root.name.lower().replace('_', '-')}"
    make_bucket(s3_endpoint, bucket)
    lake = f"s3://{bucket}/lake"
    monkeypatch_module.setenv("CRYPTO_ASSETS_LAKE", lake)
    monkeypatch_module.setenv(LEASE_VARIABLE, "4")  # a killed holder's lock lapses in seconds, not a minute
    monkeypatch_module.setenv("CRYPTO_ASSETS_CONFIG", str(write_config(root / "home")))
    sigkill_after_start(RUN, [str(root / "dagster-killed"), FIRST, LAST], delay)

    run_graph(root / "home", root, monkeypatch_module, "dagster-rerun")
    stored = remote_files(s3_endpoint, lake)
    assert stored.keys() == expected.keys()
    assert all(stored[key] == expected[key] for key in stored)


_REFERENCE: dict[str, bytes] = {}


def reference_lake(tmp_path_factory, monkeypatch) -> dict[str, bytes]:  # noqa: ANN001
    """The lake an uninterrupted run writes on local disk (once for the module), without its lock file."""
    if not _REFERENCE:
        root = tmp_path_factory.mktemp("reference")
        settings_, _ = run_graph(root / "home", root, monkeypatch, "dagster")
        _REFERENCE.update({k: v for k, v in local_files(settings_.lake_dir).items() if not k.startswith(".")})
    return _REFERENCE
