"""The Dagster UI in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the whole
system started by ``crypto-assets up``: replay exchange, broker, producer, Spark stream, webserver and daemon.

As a newcomer would after ``crypto-assets up`` (batch and forecast graphs included), it opens the asset graph
and the batch group's lineage, then, in the Catalog filtered to the batch group, selects its assets and launches a
backfill of a month range from the launch dialog (no config: every batch asset backfills its range in a single
run, as the dialog's preview shows) and times it from launch to completion,
sees each asset check pass on the assets' Checks tabs, opens ``forecast_results``' metadata and the chart it
links to, then sees ``unified_view`` materialized by the sensor (one run for both symbols) from micro-batches
streamed after the backfill, on the run page of that sensor run. The instance is
queried alongside, for what the UI only shows in passing (run counts, partitions, metadata). Screenshots of
every step go to ``$CRYPTO_ASSETS_TEST_ARTIFACTS`` (default ``<repo>/test-artifacts``)/browser.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter

from crypto_assets.lake.microbatch_log import latest_batch_id
from crypto_assets.serving.processes import free_port, port_open, read_process_records
from crypto_assets.serving.refresh_runs import SPEED_REFRESH_SENSOR as SENSOR_NAME
from crypto_assets_tests.conftest import REPO
from crypto_assets_tests.serving.up_process import running_up, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("CRYPTO_ASSETS_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("CRYPTO_ASSETS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
UI_TIMEOUT_MS = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BATCH_ASSETS = ("minute_raw", "minute_gaps", "exchange_backfill", "daily_raw", "daily_filled", "prophet_input")
# Every check the batch group and the serving layer declare, per asset, as the UI lists them.
BATCH_CHECKS = {
    "minute_raw": ("schema", "unique_minutes", "ohlc_consistent", "minutes_complete", "sources_clean"),
    "exchange_backfill": ("gaps_filled", "unique_minutes"),
    "daily_raw": ("schema", "unique_days", "ohlc_consistent", "fresh"),
    "daily_filled": ("schema", "no_missing_days", "moving_averages_correct"),
    "prophet_input": ("schema", "complete"),
}
BACKFILL_BOUND_SECONDS = 240
UNIFIED_VIEW_CHECKS = ("schema", "batch_precedence", "moving_averages_continuous", "one_row_per_day")


@pytest.fixture
def system(project_home, tmp_path):
    """``crypto-assets up`` in a temp home on free ports; stopped with SIGTERM afterwards."""
    # Every sensor refresh evaluates the view's checks (view_check_minutes = 0), so the run the test opens has them.
    home = project_home(
        extra="[exchange]\nbackfill = true\n[serving]\nsensor_min_interval_seconds = 15\nview_check_minutes = 0\n"
        "[stream]\ntrigger_seconds = 5\n",
        scale="tiny",
    )
    port = free_port()
    dagster_home = tmp_path / "dagster_home"
    # This instance's user has already answered Dagster's "Join the Dagster community" prompt (Dagster keeps
    # that in $DAGSTER_HOME/.nux). Otherwise it pops up a second after a page loads, possibly under the launch
    # dialog, where it takes the dialog's place as the page's first dialog.
    (dagster_home / ".nux").mkdir(parents=True)
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    log = tmp_path / "up.log"
    begin = time.time()
    with running_up(home, dagster_home, port, log) as (up, _):
        wait_for(
            lambda: up.poll() is not None or "dagster-daemon" in read_process_records(home),
            900,
            "the system to start",
            log,
        )
        assert up.poll() is None, log.read_text()
        wait_for(lambda: port_open(port), 60, "the webserver", log)
        print(f"system up in {time.time() - begin:.0f}s")
        yield home, dagster_home, f"http://127.0.0.1:{port}"


def month_start(day: datetime) -> str:
    return day.replace(day=1).strftime("%Y-%m-%d")


def fresh_sensor_views(
    instance: DagsterInstance, after: float, newer_than_batch: int | None
) -> dict[str, tuple[str, dict]]:
    """symbol -> (run id, metadata) of its newest ``unified_view`` materialization after ``after``, by a run of
    the sensor, built from a micro-batch logged after batch ``newer_than_batch`` and from events after ``after``."""
    found: dict[str, tuple[str, dict]] = {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey("unified_view"), after_timestamp=after), limit=200
    ).records
    for record in records:  # newest first
        symbol = record.partition_key
        if symbol in found:
            continue
        run = instance.get_run_by_id(record.run_id)
        if run is None or run.tags.get("dagster/sensor_name") != SENSOR_NAME:
            continue
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        batch, as_of = metadata.get("speed_batch_id"), metadata.get("as_of")
        newer_batch = isinstance(batch, int) and (newer_than_batch is None or batch > newer_than_batch)
        if newer_batch and isinstance(as_of, str) and datetime.fromisoformat(as_of).timestamp() > after:
            found[symbol] = (record.run_id, metadata)
    return found


def test_backfill_from_the_ui_then_the_sensor_keeps_unified_view_fresh(system):
    from playwright.sync_api import expect, sync_playwright

    home, dagster_home, base = system
    daemon_log = home / "logs" / "dagster-daemon.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("*.png"):
        stale.unlink()
    now = datetime.now(UTC)
    first, last = month_start(now.replace(day=1) - timedelta(days=1)), month_start(now)
    started = time.time()

    with DagsterInstance.local_temp(str(dagster_home)) as instance, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        # Should Dagster still ask to join its community (the fixture answered it), skip it as a user would.
        community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
        page.add_locator_handler(community, lambda: community.get_by_role("button", name="Skip").click())
        steps = iter(range(1, 100))

        def shot(name: str) -> None:
            page.screenshot(path=str(ARTIFACTS / f"{next(steps):02d}-{name}.png"), full_page=True)

        try:
            # The whole asset graph, with the serving and speed groups beside batch and forecast.
            page.goto(f"{base}/asset-groups")
            for group in ("batch", "serving", "speed"):
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            shot("asset-graph")

            # The batch group's graph: its lineage, from minute_raw to prophet_input.
            page.goto(f'{base}/asset-groups~group%3A"batch"')
            for asset in BATCH_ASSETS:
                expect(page.get_by_role("button", name=asset).first).to_be_visible()
            shot("batch-graph")

            # The Catalog: filter it to the batch group, select its assets and backfill last month and this
            # month. Each row's checkbox is a hidden input its label draws, so the label takes the click.
            page.goto(f"{base}/assets")
            expect(page.get_by_test_id("checkbox-unified_view")).to_have_count(1)
            search = page.get_by_label("Search and filter assets")  # a CodeMirror editor: typed into
            search.focus()
            page.keyboard.type('group:"batch"')
            search.press("Enter")
            expect(page.get_by_test_id("checkbox-unified_view")).to_have_count(0)
            rows = [page.get_by_test_id(f"checkbox-{asset}") for asset in BATCH_ASSETS]
            for row in rows:
                expect(row).to_have_count(1)
            select_all = page.get_by_role("checkbox").and_(page.locator(":not([data-testid])"))
            select_all.locator("..").click()
            for row in rows:
                expect(row).to_be_checked()
            materialize = page.get_by_role("button", name="Materialize selected")
            expect(materialize).to_contain_text(f"({len(BATCH_ASSETS)})")
            shot("catalog-batch-selected")
            materialize.click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            expect(dialog).to_be_visible()
            expect(dialog.get_by_text(f"{len(BATCH_ASSETS)} assets")).to_be_visible()
            ranges = dialog.get_by_placeholder("No matching partitions")
            ranges.fill(f"[{first}...{last}]")
            ranges.press("Enter")
            expect(dialog.get_by_text("2 partitions", exact=True)).to_be_visible()
            shot("launch-backfill")
            # The dialog's notice says "varying backfill policies" for any selection of several assets (it
            # compares the policies' objects, not their values); its preview lists each asset's policy.
            dialog.get_by_role("button", name="Preview").click()
            preview = page.get_by_role("dialog").filter(has_text="Backfill preview")
            for asset in BATCH_ASSETS:
                expect(preview.get_by_text(asset, exact=True).first).to_be_visible()
            expect(preview.get_by_text("Backfills all partitions in a single run")).to_have_count(len(BATCH_ASSETS))
            expect(preview.get_by_text(f"{first}...{last}")).to_have_count(len(BATCH_ASSETS))
            shot("backfill-preview")
            preview.get_by_role("button", name="OK").click()
            expect(preview).to_have_count(0)
            launched = time.time()
            dialog.get_by_role("button", name="Launch backfill").click()
            expect(dialog).to_have_count(0)
            print(f"backfill launched {time.time() - started:.0f}s into the test")

            backfill = wait_for(lambda: instance.get_backfills(), 60, "the backfill to be created", daemon_log)[0]
            done = wait_for(
                lambda: (
                    (b := instance.get_backfill(backfill.backfill_id)).status.value.startswith(
                        ("COMPLETED", "FAILED", "CANCELED")
                    )
                    and b
                ),
                420,
                "the backfill to finish",
                daemon_log,
                step=2.0,
            )
            finished = time.time()
            print(f"UI backfill: launch to done in {finished - launched:.0f}s")
            # The batch view closes every day before the one its run wrote it on.
            yesterday = (datetime.fromtimestamp(finished, UTC) - timedelta(days=1)).date()
            batch_at_finish = latest_batch_id(home / "lake")
            print(
                f"backfill finished {finished - started:.0f}s into the test (micro-batch {batch_at_finish} logged by then)"
            )
            runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
            assert done.status.value == "COMPLETED_SUCCESS", (done.status, [(r.run_id, r.status) for r in runs])
            assert len(runs) == 1, [(r.run_id, r.status) for r in runs]
            assert runs[0].status == DagsterRunStatus.SUCCESS, runs[0].status
            # Two months on a small market: the backfill daemon's 30 s loop dominates (twice: to submit the run
            # and to see it done). A bound far above the usual figure, so only a stuck queue fails it.
            assert finished - launched < BACKFILL_BOUND_SECONDS, f"backfill took {finished - launched:.0f}s"
            for asset in BATCH_ASSETS:
                assert {first, last} <= instance.get_materialized_partitions(AssetKey(asset)), asset

            # The backfill's page: succeeded, every asset's two partitions done, by its one run.
            page.goto(f"{base}/runs/b/{backfill.backfill_id}")
            expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
            expect(page.get_by_text("100% completed")).to_have_count(len(BATCH_ASSETS))
            shot("backfill-completed")
            page.goto(f"{base}/runs/b/{backfill.backfill_id}?tab=runs")
            expect(page.get_by_role("link", name=runs[0].run_id[:8]).first).to_be_visible()
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            shot("backfill-run")

            # Each batch check passed, as the assets' Checks tabs show: its row says Succeeded, its detail
            # says Passed, and no check of the asset shows Failed.
            for asset, check_names in BATCH_CHECKS.items():
                page.goto(f"{base}/assets/{asset}?view=checks")
                expect(page.get_by_text(re.compile(r"^Checks \(\d+\)$"))).to_be_visible()
                for check in check_names:
                    row = page.locator("[class*='checkRow']").filter(has=page.get_by_title(check, exact=True))
                    expect(row).to_have_count(1)
                    expect(row).to_contain_text("Succeeded")
                    row.click()
                    expect(page).to_have_url(re.compile(rf"checkDetail={check}(&|$)"))
                    expect(page.get_by_text("Evaluation result", exact=True)).to_be_visible()
                    expect(page.get_by_text("Passed", exact=True)).to_be_visible()
                expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
                shot(f"checks-{asset}")

            # Micro-batches keep landing; the sensor refreshes unified_view for both symbols on its own, from
            # micro-batches logged after the backfill finished.
            views = wait_for(
                lambda: (v := fresh_sensor_views(instance, finished, batch_at_finish)).keys() >= set(SYMBOLS) and v,
                300,
                "sensor runs of unified_view with micro-batches newer than the backfill",
                daemon_log,
                step=2.0,
            )
            print(f"unified_view refreshed by the sensor {time.time() - started:.0f}s into the test")
            for symbol in SYMBOLS:
                _, metadata = views[symbol]
                assert metadata["seam_date"] == str(yesterday), (symbol, metadata)
                assert metadata["batch_rows"] > 0 and metadata["speed_rows"] >= 1, (symbol, metadata)
            event = instance.get_latest_materialization_event(AssetKey("unified_view"))
            assert event.timestamp > launched

            # The sensor's run, as its page shows it: launched by the sensor, succeeded, unified_view
            # materialized from the newer micro-batch, and each of its checks succeeded (none failed).
            run_id, metadata = views["BTCUSDT"]
            page.goto(f"{base}/runs/{run_id}")
            expect(page.get_by_title(SENSOR_NAME, exact=True)).to_be_visible()
            expect(page.get_by_text(re.compile("BTCUSDT")).first).to_be_visible()
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            logs = page.get_by_placeholder("Filter…")
            logs.fill("type:ASSET_MATERIALIZATION")
            logs.press("Enter")
            # One run refreshes both symbols: a materialization per partition, the first one opened.
            expect(page.get_by_text("Materialized value unified_view.")).to_have_count(len(SYMBOLS))
            page.get_by_role("button", name="View full message").first.click()
            message = page.get_by_role("dialog").filter(has_text="Materialized value unified_view.")
            batch_row = message.get_by_role("row").filter(has=page.get_by_text("speed_batch_id", exact=True))
            expect(batch_row).to_be_visible()
            expect(batch_row).to_contain_text(str(metadata["speed_batch_id"]))
            shot("sensor-run-materialization")
            message.get_by_role("button", name="Done").click()
            expect(message).to_have_count(0)
            logs.fill("type:ASSET_CHECK_EVALUATION")
            logs.press("Enter")
            for check in UNIFIED_VIEW_CHECKS:
                expect(
                    page.get_by_text(f"Check {check} succeeded for materialization of unified_view.")
                ).to_be_visible()
            expect(page.get_by_text("failed for materialization")).to_have_count(0)
            shot("sensor-run-checks")

            # The asset itself: materialized, with the seam at yesterday; its Checks tab shows no failure.
            page.goto(f"{base}/assets/unified_view")
            # The row keyed seam_date (the per_symbol table above it has a seam_date column too).
            seam_row = page.get_by_role("row", name=re.compile(r"^seam_date\b"))
            expect(seam_row).to_contain_text(str(yesterday))
            shot("unified-view")
            page.goto(f"{base}/assets/unified_view?view=checks")
            for check in UNIFIED_VIEW_CHECKS:
                row = page.locator("[class*='checkRow']").filter(has=page.get_by_title(check, exact=True))
                # A sensor run may be evaluating it right now.
                expect(row).to_contain_text(re.compile("Succeeded|In progress"))
            expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
            shot("unified-view-checks")
            page.goto(f"{base}/automation")
            expect(page.get_by_text(SENSOR_NAME).first).to_be_visible()
            shot("sensor")
            # Last (it needs the forecast model to fit the default history): forecast_results: its metadata (the PNG preview inline) and the interactive chart it links to.
            # The Overview shows the latest materialization (either symbol's); its chart row links that chart.
            event = instance.get_latest_materialization_event(AssetKey("forecast_results"))
            assert event is not None, "forecast_results was never materialized"
            chart = event.asset_materialization.metadata["chart"].value
            page.goto(f"{base}/assets/forecast_results")
            chart_row = page.get_by_role("row", name=re.compile(r"^chart\b"))
            expect(chart_row).to_contain_text(chart)
            shot("forecast-results-metadata")
            page.goto(chart)
            expect(page.locator(".plotly-graph-div").first).to_be_visible()
            shot("forecast-chart")

        except Exception:
            page.screenshot(path=str(ARTIFACTS / "99-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
