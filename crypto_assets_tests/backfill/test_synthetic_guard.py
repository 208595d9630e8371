"""The demo configuration (synthetic history, the real Binance API by default) never mixes real candles into
synthetic history: the exchange_backfill asset skips with a passing check that says why, the command refuses;
a local replay server (what `crypto-assets up` starts) or real history files let the backfill run."""

from __future__ import annotations

import pytest
from dagster import AssetKey

from crypto_assets.batch.backfill.guard import is_local_exchange, synthetic_mix_reason
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.cli import main
from crypto_assets.settings import load_settings
from crypto_assets_tests.backfill.conftest import recording
from crypto_assets_tests.conftest import instance_at

BINANCE = "https://api.binance.com"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.3.2.1:8080/prefix", True),
        ("http://localhost:9000", True),
        ("http://[::1]:9000", True),
        (BINANCE, False),
        ("https://api1.binance.com", False),
        ("http://10.0.0.5:8080", False),  # another machine on the network is no replay of this one
        ("http://127.0.0.1.example.com", False),
    ],
)
def test_local_exchanges(url, local):
    assert is_local_exchange(url) is local


@pytest.fixture(autouse=True)
def no_exchange_from_the_environment(monkeypatch):
    for name in ("CRYPTO_ASSETS_EXCHANGE_REST_URL", "CRYPTO_ASSETS_EXCHANGE_BACKFILL"):
        monkeypatch.delenv(name, raising=False)


def test_the_rule(shared_data, project_home):
    project_home(extra="[exchange]\nbackfill = true\n")  # no sources: the synthetic default; Binance by default
    settings = load_settings()
    assert settings.exchange.rest_url == BINANCE
    reason = synthetic_mix_reason(settings)
    assert reason and "synthetic market" in reason and BINANCE in reason and "exchange-replay" in reason

    project_home(extra='[exchange]\nrest_url = "http://127.0.0.1:4444"\n')
    assert synthetic_mix_reason(load_settings()) is None  # the replay server serves the same synthetic market

    project_home([str(recording(shared_data))], extra="[exchange]\nbackfill = true\n")
    assert synthetic_mix_reason(load_settings()) is None  # real history, real exchange


def test_the_demo_skips_the_backfill_with_a_passing_check_that_says_why(project_home, tmp_path):
    # `crypto-assets demo` with no data configured: the synthetic market, the default (real) exchange, no network.
    home = project_home(scale="tiny", extra="[exchange]\nbackfill = true\n")
    with instance_at(tmp_path / "dagster") as instance:
        result = materialize_batch_range(instance, load_settings(), "2025-12-01", "2025-12-01")
        assert result.success
        checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
        filled = checks[("exchange_backfill", "gaps_filled")]
        assert filled.passed and "skipped on purpose" in filled.description and "synthetic market" in filled.description
        assert checks[("exchange_backfill", "unique_minutes")].passed
        errors = [k for k, e in checks.items() if not e.passed and e.severity.value == "ERROR"]
        assert not errors, errors
        metadata = instance.get_latest_materialization_event(
            AssetKey("exchange_backfill")
        ).asset_materialization.metadata
        assert BINANCE in metadata["skipped"].value and metadata["exchange"].value == BINANCE
        assert "requests" not in metadata and "covered_until" not in metadata
        assert metadata["missing_minutes"].value > 0  # the gaps are still reported (December after the 14th)
        logged = [
            r.user_message for r in instance.all_logs(result.run_id) if "exchange backfill skipped" in r.user_message
        ]
        assert logged and "synthetic market" in logged[0]
    assert not (home / "lake/exchange_minutes").exists()
    assert not (home / "lake/exchange_empty").exists()


def test_the_command_refuses_to_mix_real_candles_into_synthetic_history(project_home, capsys):
    project_home(extra='[[symbols]]\nname = "BTCUSDT"\nstart = "2025-11-01"\n[exchange]\nbackfill = true\n')
    assert main(["backfill", "--from", "2025-12-14", "--to", "2025-12-20"]) == 2
    err = capsys.readouterr().err
    assert "not backfilling" in err and "synthetic market" in err and BINANCE in err
