"""Shared fixtures: the real market data beside the checkout, and throw-away project homes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from dagster import DagsterInstance

from crypto_assets.dagster_home import tune_event_writes, write_dagster_yaml

pytest_plugins = ["crypto_assets_tests.tiers", "pytester"]  # the --quick unit tier and its guard; its test

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real Binance data; CI always has it beside the clone, so its absence is a failure, not a skip."""
    assert (SHARED_DATA / "binance_spot_1m").is_dir(), f"expected the shared market data at {SHARED_DATA}"
    return SHARED_DATA


def instance_at(path: Path) -> DagsterInstance:
    """A real, persistent Dagster instance in ``path`` (stock SQLite storage), configured as the CLI configures
    DAGSTER_HOME: Dagster's public ``local_temp`` reads the dagster.yaml there."""
    write_dagster_yaml(path)
    return DagsterInstance.local_temp(str(path))


def write_config(home: Path, sources: list[str] | None = None, extra: str = "") -> Path:
    """A crypto_assets.toml for a project home in a temp dir.

    Tests have no network, so the exchange backfill is off unless ``extra`` configures ``[exchange]`` (e.g.
    with the replay server's URL).
    """
    home.mkdir(parents=True, exist_ok=True)
    lines = [f'home = "{home}"']
    for source in sources or []:
        lines += ["[[sources]]", f'path = "{source}"']
    if "[exchange]" not in extra:
        extra += "\n[exchange]\nbackfill = false\n"
    config = home / "crypto_assets.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    return config


@pytest.fixture
def project_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Returns a function that points the settings at a fresh home with the given sources."""

    def make(sources: list[str] | None = None, extra: str = "", scale: str = "tiny") -> Path:
        home = tmp_path / "home"
        config = write_config(home, sources, extra)
        monkeypatch.setenv("CRYPTO_ASSETS_CONFIG", str(config))
        monkeypatch.delenv("CRYPTO_ASSETS_HOME", raising=False)
        monkeypatch.setenv("CRYPTO_ASSETS_SYNTHETIC_SCALE", scale)
        return home

    return make


# The CLI sets this for its Dagster processes; the dagster-CLI subprocess test runs Dagster the same way.
tune_event_writes()

# Started with SIGINT ignored (nohup, `&` in a script), this process would end up ignoring SIGTERM after its
# first in-process Dagster run (Dagster maps SIGTERM to SIGINT's handler), and so would every child a test
# starts and then asks to stop. Tests run with Python's usual handler whatever launched them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def postgres_url():
    """A real PostgreSQL server for this test (initdb/pg_ctl on a free port), removed afterwards."""
    from crypto_assets_tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def storage_instance(request, tmp_path, monkeypatch):
    """A persistent instance configured by the dagster.yaml the CLI writes (SQLite, or PostgreSQL on a real
    throwaway server), opened with Dagster's public ``DagsterInstance.local_temp``."""
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from crypto_assets.dagster_home import POSTGRES_URL_ENV

    postgres = request.param == "postgres"
    if postgres:
        monkeypatch.setenv(POSTGRES_URL_ENV, request.getfixturevalue("postgres_url"))
    write_dagster_yaml(tmp_path / "dagster", postgres=postgres)
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as opened:
        if postgres:
            assert isinstance(opened.event_log_storage, PostgresEventLogStorage)
            assert isinstance(opened.run_storage, PostgresRunStorage)
        yield opened


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's standalone server on a free port) shared by the session's tests."""
    from crypto_assets_tests.s3 import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_lake(s3_endpoint, monkeypatch, request):
    """An empty ``s3://`` lake of its own for this test, with the AWS variables pointing at the server."""
    import re
    import uuid

    from crypto_assets_tests.s3 import BUCKET, apply_environment, make_bucket

    apply_environment(s3_endpoint, lambda key, value: monkeypatch.setenv(key, value))
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:30].strip("-")
    bucket = f"{BUCKET}-{name}-{uuid.uuid4().hex[:8]}"
    make_bucket(s3_endpoint, bucket)
    monkeypatch.setenv("CRYPTO_ASSETS_LAKE", f"s3://{bucket}/lake")
    return f"s3://{bucket}/lake"
