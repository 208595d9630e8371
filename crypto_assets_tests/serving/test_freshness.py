"""Freshness that sees a stall: the Definitions carry Dagster freshness policies with the configured windows,
and on a running system (``crypto-assets up``, its real ``dagster-daemon run``) a stalled stream turns
``unified_view`` red in the webserver's GraphQL API, and green again once micro-batches land."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from dagster import AssetKey, FreshnessPolicy

from crypto_assets.definitions import build_definitions
from crypto_assets.serving.processes import free_port, read_process_records
from crypto_assets.serving.webserver import graphql
from crypto_assets.settings import load_settings
from crypto_assets.validation import SettingsError
from crypto_assets_tests.serving.up_process import running_up, wait_for

FRESHNESS = """
query Freshness($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      freshnessStatusInfo { freshnessStatus freshnessStatusMetadata { lastMaterializedTimestamp } }
      internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds } }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""


def policy_of(defs, name: str) -> FreshnessPolicy | None:
    key = AssetKey(name)
    return defs.resolve_assets_def(key).specs_by_key[key].freshness_policy


def test_the_definitions_carry_freshness_policies_with_the_configured_windows(project_home):
    project_home(extra="[checks]\nfreshness_hours = 30\n[serving]\nstale_minutes = 3\n")
    defs = build_definitions(load_settings())
    assert policy_of(defs, "unified_view") == FreshnessPolicy.time_window(fail_window=timedelta(minutes=3))
    batch = FreshnessPolicy.time_window(fail_window=timedelta(hours=30), warn_window=timedelta(hours=26))
    assert policy_of(defs, "daily_raw") == batch and policy_of(defs, "daily_filled") == batch
    assert policy_of(defs, "minute_raw") is None

    # A window shorter than a missed daily refresh fails without warning first.
    project_home(extra="[checks]\nfreshness_hours = 12\n")
    defs = build_definitions(load_settings())
    assert policy_of(defs, "daily_raw") == FreshnessPolicy.time_window(fail_window=timedelta(hours=12))
    assert policy_of(defs, "unified_view") == FreshnessPolicy.time_window(fail_window=timedelta(minutes=5))

    # A window no longer than the sensor's interval would flap red between two healthy refreshes.
    project_home(extra="[serving]\nstale_minutes = 1\nsensor_min_interval_seconds = 60\n")
    with pytest.raises(SettingsError, match="serving.stale_minutes"):
        load_settings()


def unified_view_freshness(port: int) -> tuple[str, float | None, dict, dict]:
    """The view's freshness status, its last materialization, its policy, and the daemons' health."""
    data = graphql(port, FRESHNESS, {"path": ["unified_view"]})
    node = data["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    info = node["freshnessStatusInfo"] or {}
    meta = info.get("freshnessStatusMetadata") or {}
    daemons = {d["daemonType"]: d for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
    return info.get("freshnessStatus"), meta.get("lastMaterializedTimestamp"), node["internalFreshnessPolicy"], daemons


def freshness_becomes(port: int, status: str):
    def seen():
        current = unified_view_freshness(port)
        return current if current[0] == status else None

    return seen


@pytest.mark.slow
def test_a_stalled_stream_turns_unified_view_red_and_its_recovery_green_again(project_home, tmp_path):
    stale_minutes = 2
    home = project_home(extra=f"[serving]\nsensor_min_interval_seconds = 5\nstale_minutes = {stale_minutes}\n")
    port, log = free_port(), tmp_path / "up.log"
    # No batch graph: the speed layer alone refreshes the view, through the sensor, as micro-batches land.
    with running_up(home, tmp_path / "dagster_home", port, log, args=("--skip-batch",)) as (up, _):
        wait_for(lambda: up.poll() is not None or "unified_view materialized" in log.read_text(), 600, "a view", log)
        assert up.poll() is None, log.read_text()[-4000:]

        _, _, policy, daemons = wait_for(freshness_becomes(port, "HEALTHY"), 240, "a fresh unified_view", log)
        assert policy == {"failWindowSeconds": stale_minutes * 60, "warnWindowSeconds": None}
        # The policy is evaluated by the daemon `up` runs, not by a run or a sensor of ours.
        assert daemons["FRESHNESS_DAEMON"]["required"] and daemons["FRESHNESS_DAEMON"]["healthy"], daemons

        # A stall: the stream's processes (driver, JVM, workers) stop without exiting, so nothing restarts them
        # and no micro-batch lands; only the freshness policy can tell.
        stream = read_process_records(home)["stream"].pid
        os.killpg(stream, signal.SIGSTOP)
        try:
            _, last, _, _ = wait_for(freshness_becomes(port, "DEGRADED"), 600, "a stale unified_view", log)
            assert last is not None
        finally:
            os.killpg(stream, signal.SIGCONT)

        # The stream resumes where it stopped; its micro-batches refresh the view, and the view is fresh again.
        _, refreshed, _, _ = wait_for(freshness_becomes(port, "HEALTHY"), 600, "unified_view fresh again", log)
        assert refreshed > last
