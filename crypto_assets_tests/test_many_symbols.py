"""Fifty symbols through the batch graph: the synthetic market generates them, and the run's logs, metadata,
checks and ``status`` stay readable (worst first, the rest counted; one summary line per step, not fifty)."""

from __future__ import annotations

import re

import polars as pl
from dagster import AssetKey

from crypto_assets.batch import synthetic
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.serving.status import layer_freshness, render_status
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at

SYMBOLS = 50
SYMBOL = re.compile(r"SYM\d{3}USDT")


def test_the_synthetic_market_generates_many_seeded_symbols(tmp_path):
    series = synthetic.market_series("tiny", SYMBOLS)
    assert [s.symbol for s in series[:2]] == ["SYM001USDT", "SYM002USDT"] and len(series) == SYMBOLS
    assert len({s.start_price for s in series}) == SYMBOLS  # each symbol its own price level
    assert series == synthetic.market_series("tiny", SYMBOLS)  # seeded: the same every time
    first = synthetic.generate_minutes(series[0])
    assert 0.5 < first["Open"][0] / series[0].start_price < 2 and first.height > 0


def test_fifty_symbols_keep_logs_metadata_checks_and_status_short(project_home, tmp_path):
    home = project_home(extra=f"[synthetic]\nsymbols = {SYMBOLS}\n")
    settings = load_settings()
    assert len(settings.symbol_names) == SYMBOLS
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize_batch_range(instance, settings, "2025-12-01", "2025-12-01")
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]

        # One summary line per step, not one per symbol.
        for step in ("minute_raw", "daily_raw", "daily_filled", "prophet_input"):
            lines = [m for m in messages if m.startswith(f"{step} 2025-12")]
            assert len(lines) == 1, (step, lines)
            assert f"for {SYMBOLS} of {SYMBOLS} symbols" in lines[0] and "… and 40 more" in lines[0]
            assert len(SYMBOL.findall(lines[0])) == 10
        naming = [m for m in messages if SYMBOL.search(m)]
        assert len(naming) == 5, "\n".join(m[:150] for m in naming)  # the four steps' lines and minute_gaps'
        for message in naming:
            assert len(SYMBOL.findall(message)) == 10 and "… and 40 more" in message, message
        assert len(messages) < 20, messages

        event = instance.get_latest_materialization_event(AssetKey("minute_raw")).asset_materialization
        assert event.metadata["rows"].value > SYMBOLS * 13 * 1440 // 2
        per_symbol = event.metadata["rows_per_symbol"].value
        assert len(SYMBOL.findall(per_symbol)) == 10 and per_symbol.endswith("… and 40 more")

        for evaluation in result.get_asset_check_evaluations():
            judged = evaluation.metadata["judged_symbols"].value
            assert len(SYMBOL.findall(judged)) == 10 and judged.endswith("… and 40 more (50 symbols)")
            for value in evaluation.metadata.values():
                assert len(SYMBOL.findall(str(value.value))) <= 25  # largest_gaps lists at most 25 rows

    # status: the symbols furthest behind, then a count; --json keeps every one.
    stored = pl.read_parquet(home / "lake/minute_raw/symbol=SYM007USDT/year=2025/month=12/part-0.parquet")
    stored.head(10).write_parquet(home / "lake/minute_raw/symbol=SYM007USDT/year=2025/month=12/part-0.parquet")
    freshness = layer_freshness(settings)
    assert len(freshness["symbols"]) == SYMBOLS
    text = render_status([], freshness, home)
    listed = [line for line in text.splitlines() if "minute_raw up to" in line]
    assert len(listed) == 10 and "SYM007USDT" in listed[0]  # the one left behind comes first
    assert "… and 40 more" in text
