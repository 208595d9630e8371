"""Settings: symbols and sources are configuration, and what users type is validated."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from crypto_assets.batch.minute_ingest import ingest_window
from crypto_assets.batch.source_catalog import resolve_sources
from crypto_assets.settings import load_settings, parse_delay
from crypto_assets.validation import SettingsError


def test_a_new_symbol_is_configuration_not_code(tmp_path, project_home):
    source = tmp_path / "SOLUSDT_1m.csv"
    source.write_text("timestamp,open,high,low,close,volume\n2024-03-01 00:00:00,130.1,130.5,129.9,130.2,812.5\n")
    home = project_home(
        [str(source)],
        extra='[[symbols]]\nname = "SOLUSDT"\nstart = "2020-08-11"\n',
    )
    settings = load_settings()
    assert settings.symbol_names == ["SOLUSDT"] and settings.history_start == date(2020, 8, 11)

    sources, problems, synthetic = resolve_sources(settings)
    assert not problems and not synthetic and [s.symbol for s in sources] == ["SOLUSDT"]
    ingest_window(
        sources,
        settings.lake_dir,
        settings.symbol_names,
        datetime(2024, 3, 1, tzinfo=UTC),
        datetime(2024, 4, 1, tzinfo=UTC),
    )
    stored = pl.read_parquet(home / "lake/minute_raw/symbol=SOLUSDT/year=2024/month=03/part-0.parquet")
    assert stored["close"].to_list() == [130.2]


@pytest.mark.parametrize("bad", ["../etc", "btcusdt", "BTC/USDT", "", "A" * 21])
def test_symbols_that_are_not_plain_names_are_rejected(project_home, bad):
    project_home(extra=f'[[symbols]]\nname = "{bad}"\n')
    with pytest.raises(SettingsError, match="invalid symbol"):
        load_settings()


def test_a_source_whose_symbol_cannot_be_told_is_reported_not_guessed(tmp_path, project_home):
    source = tmp_path / "btcusd_1-min_data.csv"
    source.write_text("Timestamp,Open,High,Low,Close,Volume\n1325317920.0,4.39,4.39,4.39,4.39,0.45\n")
    project_home([str(source)])
    sources, problems, _ = resolve_sources(load_settings())
    assert sources == []
    assert "cannot tell the symbol" in str(problems[0]) and str(source) in str(problems[0])


def test_missing_config_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="not a file"):
        load_settings()


@pytest.mark.parametrize("home", ["s3://bucket/crypto", "gs://bucket/crypto", "file:///tmp/crypto"])
def test_a_home_at_a_url_is_refused_not_made_a_local_folder(monkeypatch, tmp_path, home):
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYPTO_ASSETS_HOME", home)
    with pytest.raises(SettingsError, match="home is a local folder.*CRYPTO_ASSETS_LAKE"):
        load_settings()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("lake", "error"),
    [("gs://bucket/crypto", "uses gs://"), ("s3:///crypto", "names no bucket"), ("file:///tmp/x", "uses file://")],
)
def test_a_lake_url_other_than_s3_is_refused_naming_the_key(monkeypatch, tmp_path, lake, error):
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", lake)
    with pytest.raises(SettingsError, match=f"lake: .*{error}"):
        load_settings()


def test_the_lake_may_live_apart_from_home_locally_or_on_s3(monkeypatch, tmp_path):
    monkeypatch.delenv("CRYPTO_ASSETS_CONFIG", raising=False)
    monkeypatch.delenv("CRYPTO_ASSETS_LAKE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_settings().lake_dir == tmp_path / "var" / "lake"
    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", "shared/lake")
    assert load_settings().lake_dir == tmp_path / "shared" / "lake"
    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", "s3://market-bucket/crypto")
    settings = load_settings()
    assert settings.remote_lake and str(settings.lake_dir) == "s3://market-bucket/crypto"
    assert str(settings.lake_dir / "minute_raw") == "s3://market-bucket/crypto/minute_raw"
    with pytest.raises(SettingsError, match="stream job needs a local"):
        settings.require_local_lake("the stream job")


def test_component_sections_default_to_the_real_exchange_and_local_parts(project_home):
    project_home()
    settings = load_settings()
    assert settings.exchange.rest_url == "https://api.binance.com"
    assert settings.exchange.ws_url == "wss://stream.binance.com:9443"
    assert settings.spark.engine == "polars" and settings.spark.master == "local[*]"
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.serving.sensor_min_interval_seconds == 30


def test_component_sections_come_from_the_file_and_env_wins(project_home, monkeypatch):
    project_home(
        extra='[kafka]\nbootstrap_servers = "kafka-1:9092,kafka-2:9092"\npartitions = 6\n'
        '[spark]\nengine = "spark"\nmaster = "spark://spark-master:7077"\n'
    )
    monkeypatch.setenv("CRYPTO_ASSETS_KAFKA_PARTITIONS", "12")
    monkeypatch.setenv("CRYPTO_ASSETS_EXCHANGE_BACKFILL", "false")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.kafka.partitions == 12
    assert settings.spark.master == "spark://spark-master:7077" and settings.spark.engine == "spark"
    assert settings.exchange.backfill is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[spark]\nengine = "dask"\n', "spark.engine"),
        ('[exchange]\nrest_url = "ftp://example.org"\n', "exchange.rest_url"),
        ('[kafka]\npartitions = "many"\n', "kafka.partitions"),
        ('[kafka]\nbootstrap = "x:9092"\n', "unknown key"),
        ('[exchange]\nbackfill = "maybe"\n', "exchange.backfill"),
        ("[logs]\nbackups = 0\n", "logs.backups"),
        ("[logs]\nmax_bytes = -1\n", "logs.max_bytes"),
        ('[logs]\nmax_bytes = "10MB"\n', "logs.max_bytes"),
    ],
)
def test_bad_component_settings_name_the_key(project_home, extra, message):
    project_home(extra=extra)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_log_rotation_comes_from_the_file_and_env_wins(project_home, monkeypatch):
    project_home()
    assert (load_settings().logs.max_bytes, load_settings().logs.backups) == (10_000_000, 5)
    project_home(extra="[logs]\nmax_bytes = 2_000_000\nbackups = 2\n")
    monkeypatch.setenv("CRYPTO_ASSETS_LOGS_BACKUPS", "9")
    logs = load_settings().logs
    assert (logs.max_bytes, logs.backups) == (2_000_000, 9)


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("7d", timedelta(days=7)),
        ("6h", timedelta(hours=6)),
        ("10m", timedelta(minutes=10)),
        ("30s", timedelta(seconds=30)),
    ],
)
def test_run_retention_is_a_short_duration_and_the_environment_wins(project_home, monkeypatch, text, window):
    project_home()
    assert load_settings().dagster.run_retention == timedelta(days=1)
    project_home(extra=f'[dagster]\nrun_retention = "{text}"\n')
    assert load_settings().dagster.run_retention == window
    monkeypatch.setenv("CRYPTO_ASSETS_RUN_RETENTION", "2h")
    assert load_settings().dagster.run_retention == timedelta(hours=2)


@pytest.mark.parametrize("bad", ['"7"', '"7 days"', '"1w"', '"0s"', '"-1d"', '"d"', '"2 minutes"', "7"])
def test_a_run_retention_that_is_not_a_duration_names_the_key(project_home, bad):
    project_home(extra=f"[dagster]\nrun_retention = {bad}\n")
    with pytest.raises(SettingsError, match="dagster.run_retention"):
        load_settings()


def test_the_watermark_keeps_sparks_interval_words_only():
    assert parse_delay("2 minutes") == parse_delay("2 minute") == 120_000
    assert parse_delay("1.5 seconds") == 1500 and parse_delay("1 hour") == 3_600_000
    with pytest.raises(SettingsError, match="stream.watermark"):
        parse_delay("2m")  # a retention window's short form; Spark's watermark does not take it
