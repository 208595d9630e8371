"""``crypto-assets up`` on a fresh home with the embedded default, as a newcomer runs it: every asset of the
lineage materialized (forecasts included), no check failing, the forecast chart link answering, a console
that stays readable (fewer than 200 lines by the first ``unified_view``), and ``status`` saying "stopped"
after the stop. The timings of each milestone are printed (``bench/README.md`` records them)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import pytest
from dagster import AssetKey, DagsterInstance

from crypto_assets.definitions import build_definitions
from crypto_assets.serving.processes import free_port
from crypto_assets.settings import load_settings
from crypto_assets_tests.serving.up_process import running_up, wait_for

pytestmark = pytest.mark.slow

BATCH = ("minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input")
FORECAST = ("forecasts", "forecast_metrics", "forecast_results")
MILESTONE = re.compile(r"^\[\s*(\d+)s\] (.*)$", re.MULTILINE)
FIRST_VIEW = "unified_view materialized"
MAX_LOG_LINES = 200


def milestones(text: str) -> dict[str, int]:
    return {message: int(seconds) for seconds, message in MILESTONE.findall(text)}


def test_up_on_a_fresh_home_materializes_the_whole_lineage_with_passing_checks(project_home, tmp_path):
    # The embedded default: synthetic market (small scale), replay exchange, embedded broker, Spark stream.
    home = project_home(
        scale="small", extra="[exchange]\nbackfill = true\n[serving]\nsensor_min_interval_seconds = 15\n"
    )
    dagster_home = tmp_path / "dagster_home"
    port = free_port()
    log = tmp_path / "up.log"
    with running_up(home, dagster_home, port, log) as (up, env):
        wait_for(lambda: up.poll() is not None or FIRST_VIEW in log.read_text(), 1500, "the first unified_view", log)
        text = log.read_text(errors="replace")
        assert up.poll() is None, text[-6000:]
        lines_by_first_view = text[: text.index(FIRST_VIEW)].count("\n") + 1
        times = milestones(text)
        print("\n".join(f"{seconds:5d}s  {message[:100]}" for message, seconds in times.items()))
        assert lines_by_first_view < MAX_LOG_LINES, (
            f"{lines_by_first_view} lines before the first unified_view:\n{text}"
        )
        assert f"http://127.0.0.1:{port}/assets/unified_view" in text

        settings = load_settings()
        defs = build_definitions(settings)
        problems: list[str] = []  # all of them at once: one run of this test is long
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            for asset in BATCH:
                if not instance.get_materialized_partitions(AssetKey(asset)):
                    problems.append(f"{asset} was never materialized")
            for asset in (*FORECAST, "unified_view"):
                partitions = instance.get_materialized_partitions(AssetKey(asset))
                if not partitions >= set(settings.symbol_names):
                    problems.append(f"{asset}: materialized for {sorted(partitions)} only")

            for key in defs.resolve_asset_graph().asset_check_keys:
                # The sensor keeps refreshing unified_view: a check may be in flight (planned); wait for its result.
                record = wait_for(
                    lambda key=key: (
                        (r := instance.get_latest_asset_check_evaluation_record(key)) is None
                        or r.status.value != "PLANNED"
                        and (r,)
                    ),
                    120,
                    f"check {key.to_user_string()} to finish",
                    log,
                )
                evaluation = record[0].evaluation if isinstance(record, tuple) else None
                if evaluation is None or not evaluation.passed:
                    problems.append(
                        f"check {key.to_user_string()}: {evaluation.description if evaluation else 'never evaluated'}"
                    )

            # The forecast chart link of forecast_results answers with the interactive report.
            event = instance.get_latest_materialization_event(AssetKey("forecast_results"))
            if event is not None:
                url = event.asset_materialization.metadata["chart"].value
                with urllib.request.urlopen(url, timeout=10) as answer:
                    if answer.status != 200 or b"plotly" not in answer.read().lower():
                        problems.append(f"the chart link {url} does not return the chart")
        assert not problems, "\n".join(problems)
    status = subprocess.run(
        [sys.executable, "-m", "crypto_assets.cli", "--home", str(home), "status"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "dagster-daemon" in status.stdout and "not started" not in status.stdout, status.stdout
    assert re.search(r"dagster-daemon\s+stopped", status.stdout), status.stdout
    daemon_log = (home / "logs" / "dagster-daemon.log").read_text(errors="replace")
    assert "No heartbeat received" not in daemon_log
