"""Chaos on the real ``crypto-assets up``: each component is SIGKILLed once, in turn (broker, producer, stream,
code server, daemon, webserver, reports server). ``up`` must bring each one back, and ``unified_view`` must
match the exchange's own candles again once the repair has run (the oracle is in ``observe.py``). The minutes
the view missed and the seconds until it was whole again are printed per component."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

import pytest

from crypto_assets.serving.processes import free_port, read_process_records
from crypto_assets_tests.serving.observe import CHAOS_ORDER, chaos_round, check_view, view_written_at
from crypto_assets_tests.serving.up_process import running_up, wait_for

pytestmark = pytest.mark.slow

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
REPAIR_TIMEOUT = 600.0  # seconds one component gets to come back with a whole view


def test_up_recovers_from_a_sigkill_of_each_component_with_unified_view_matching_the_exchange(project_home, tmp_path):
    # The exchange backfill fetches the morning before the stream started, and what the stream misses later.
    home = project_home(
        scale="tiny", extra="[exchange]\nbackfill = true\n[serving]\nsensor_min_interval_seconds = 10\n"
    )
    port = free_port()
    log = tmp_path / "up.log"
    with running_up(home, tmp_path / "dagster_home", port, log) as (up, _):
        wait_for(lambda: up.poll() is not None or view_written_at(home, SYMBOLS), 1500, "the first unified_view", log)
        assert up.poll() is None, log.read_text()[-6000:]
        rest_url = f"http://127.0.0.1:{read_process_records(home)['exchange-replay'].ports[0]}"
        since = datetime.now(UTC).date()
        wait_for(
            lambda: (c := check_view(rest_url, home / "lake", SYMBOLS, since)).whole or print(c),
            300,
            "a whole view",
            log,
            5,
        )

        outcomes = [chaos_round(home, name, rest_url, SYMBOLS, since, REPAIR_TIMEOUT) for name in CHAOS_ORDER]

        print(f"\n{'component':<20}{'restart (s)':>12}{'missing min':>13}{'whole after (s)':>17}")
        for c in outcomes:
            print(
                f"{c.component:<20}{c.restart_s or float('nan'):>12.0f}{c.missing_minutes:>13}"
                f"{c.whole_after_s or float('nan'):>17.0f}"
            )
        assert up.poll() is None, "up gave up on a component"
        failed = [f"{c.component}: {'; '.join(c.problems)}" for c in outcomes if c.whole_after_s is None]
        assert not failed, "\n".join(failed)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=10) as answer:
            assert answer.status == 200
