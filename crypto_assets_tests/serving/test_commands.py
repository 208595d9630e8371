"""``query``, ``sql``, ``status`` and ``storage`` on a small real lake (batch files and micro-batches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta

import polars as pl
import pytest

from crypto_assets.cli import main
from crypto_assets.lake.microbatch_log import CANDLES_1M
from crypto_assets.lake.missed import MissedLog
from crypto_assets.serving.pipeline import build_unified_view
from crypto_assets.serving.processes import (
    ProcessRecord,
    free_port,
    port_open,
    write_record,
)
from crypto_assets.serving.speed_store import batch_dirs, compacted_file
from crypto_assets_tests.serving.helpers import (
    daily_minutes,
    minute_rows,
    speed_candles,
    utc,
    write_batch_layer,
    write_microbatch,
)
from crypto_assets_tests.speed.harness import stop_process
from streaming_sensor.batch_writer import quarantine_path

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = date(2024, 1, 1)
SEAM = START + timedelta(days=39)


@pytest.fixture
def lake(project_home):
    home = project_home()
    lake = home / "lake"
    days = [START + timedelta(days=i) for i in range(40)]
    write_batch_layer(
        lake, pl.concat([daily_minutes(s, days, [100.0 + i for i in range(40)]) for s in SYMBOLS]), utc(2024, 2, 10, 1)
    )
    for batch_id in range(3):
        day = SEAM + timedelta(days=batch_id)  # batch 0 re-states the closed seam day
        start = utc(day.year, day.month, day.day)
        candles = pl.concat([minute_rows(s, start, 2, 200.0 + batch_id) for s in SYMBOLS])
        write_microbatch(
            lake,
            batch_id,
            speed_candles(candles, batch_id, start + timedelta(minutes=2)),
            committed=start + timedelta(minutes=3),
        )
    for symbol in SYMBOLS:
        build_unified_view(lake, symbol, SYMBOLS)
    return lake


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_query_prints_the_unified_view_for_a_date_range_in_three_formats(lake, capsys):
    code, out, _ = run(
        capsys, "query", "--symbol", "BTCUSDT", "--from", "2024-02-08", "--to", "2024-02-11", "--format", "csv"
    )
    assert code == 0
    frame = pl.read_csv(out.encode())
    assert frame["date"].to_list() == ["2024-02-08", "2024-02-09", "2024-02-10", "2024-02-11"]  # --to is inclusive
    assert frame["source"].to_list() == ["batch", "batch", "speed", "speed"]

    code, out, _ = run(capsys, "query", "--symbol", "btcusdt", "--from", "2024-02-11", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [(r["date"], r["source"], r["close"]) for r in rows] == [("2024-02-11", "speed", 202.0)]

    code, out, _ = run(capsys, "query", "--symbol", "ETHUSDT", "--max-rows", "5")
    # The table shows the newest days (today's speed row last), saying how many older ones it leaves out.
    assert code == 0 and "as_of" in out and out.startswith("… 37 older rows before these (42 in all")
    assert "2024-02-11" in out and "speed" in out and "2024-01-01" not in out

    assert run(capsys, "query", "--symbol", "BTCUSDT", "--from", "2024-02-11", "--to", "2024-02-01")[0] == 2
    assert run(capsys, "query", "--symbol", "DOGEUSDT")[0] == 2
    with pytest.raises(SystemExit):
        main(["query", "--symbol", "BTCUSDT", "--from", "1st of May"])


def test_sql_queries_every_dataset_of_the_lake(lake, capsys):
    code, out, _ = run(capsys, "sql", "--tables")
    assert code == 0
    tables = {line.split(":")[0] for line in out.splitlines()}
    assert {"minute_raw", "daily_raw", "daily_filled", "unified_view", "speed_candles_1m", "speed_daily"} <= tables

    query = (
        "SELECT u.symbol, count(*) AS days, sum(CASE WHEN u.source = 'speed' THEN 1 ELSE 0 END) AS speed_days, "
        "max(f.date) AS batch_last FROM unified_view u LEFT JOIN daily_filled f ON u.symbol = f.symbol AND u.date = f.date "
        "GROUP BY u.symbol ORDER BY u.symbol"
    )
    code, out, _ = run(capsys, "sql", query, "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {"symbol": "BTCUSDT", "days": 42, "speed_days": 2, "batch_last": "2024-02-09"},
        {"symbol": "ETHUSDT", "days": 42, "speed_days": 2, "batch_last": "2024-02-09"},
    ]
    code, out, _ = run(
        capsys,
        "sql",
        "SELECT batch_id, count(*) AS n FROM speed_candles_1m GROUP BY batch_id ORDER BY batch_id",
        "--format",
        "csv",
    )
    assert code == 0 and out.splitlines()[1:] == ["1,4", "2,4"]  # batch 0 held only a superseded day

    code, _, err = run(capsys, "sql", "SELECT * FROM no_such_table")
    assert code == 2 and "known tables:" in err and "daily_filled" in err
    code, _, err = run(capsys, "sql", "SELECT nope FROM daily_filled")
    assert code == 2 and "nope" in err and "Resolved plan" not in err


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM \"read_csv\"('{secret}')",
        "SELECT * FROM READ_CSV /* a comment */ ('{secret}')",
        "SELECT d.* FROM daily_filled d JOIN read_parquet('{parquet}') p ON d.symbol = p.symbol",
        "SELECT symbol FROM daily_filled WHERE symbol IN (SELECT * FROM read_json('{secret}'))",
        "SELECT * FROM read_ndjson('{secret}')",
        "SELECT * FROM read_ipc('{secret}')",
    ],
)
def test_sql_reads_only_the_lake_unless_file_access_is_allowed(lake, capsys, tmp_path, query):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    parquet = next(lake.rglob("*.parquet"))
    code, out, err = run(capsys, "sql", query.format(secret=secret, parquet=parquet))
    assert code == 2 and "hunter2" not in out + err
    assert err.startswith("sql error: ") and "reads files outside the lake and is off" in err
    assert "--allow-file-access" in err and len(err.strip().splitlines()) == 1


def test_sql_file_access_is_an_explicit_opt_in_and_errors_stay_one_line(lake, capsys, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    code, out, _ = run(capsys, "sql", f"SELECT * FROM read_csv('{secret}')", "--allow-file-access", "--format", "csv")
    assert code == 0 and "hunter2" in out
    for query in (
        f"SELECT * FROM read_csv('{tmp_path / 'missing.csv'}')",
        f"SELECT * FROM read_ipc('{secret}')",
        "SELECT CAST(symbol AS INT) FROM daily_filled",
        "SELECT date +",
    ):
        code, _, err = run(capsys, "sql", query, "--allow-file-access")
        assert code == 2 and err.startswith("sql error: ") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err


@pytest.mark.integration  # a stand-in webserver in a subprocess
def test_status_reports_components_layers_and_lag(lake, capsys):
    home = lake.parent
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        write_record(home, ProcessRecord("exchange-replay", server.pid, "2026-01-01T00:00:00+00:00", [port]))
        write_record(home, ProcessRecord("broker", 2**22 + 12345, "2026-01-01T00:00:00+00:00", [free_port()]))

        code, out, _ = run(capsys, "status", "--json")
        assert code == 0
        status = json.loads(out)
        states = {c["name"]: c for c in status["components"]}
        assert states["exchange-replay"]["state"] == "running" and states["exchange-replay"]["pid"] == server.pid
        assert states["broker"]["state"] == "stopped" and states["broker"]["note"] == "stale pid file"
        assert states["dagster-daemon"]["state"] == "not started"
        assert status["daemon_heartbeat"] is None  # no webserver to ask
        assert status["speed"]["latest_batch_id"] == 2 and status["speed"]["lag_seconds"] > 0
        btc = status["symbols"]["BTCUSDT"]
        assert btc["batch_closed_through"] == "2024-02-09"
        assert btc["batch_latest_minute"] == "2024-02-09T00:02:00+00:00"
        assert btc["unified_view"]["last_day"] == "2024-02-11" and btc["unified_view"]["speed_days"] == 2
        assert btc["unified_view"]["as_of"] == utc(2024, 2, 11, 0, 2).isoformat()

        code, out, _ = run(capsys, "status")
        assert code == 0 and "exchange-replay    running" in out and "latest micro-batch 2" in out
    finally:
        stop_process(server, timeout=10)


def test_storage_shows_usage_and_reclaims_superseded_microbatches_and_orphaned_temp_files(lake, capsys):
    # More micro-batches land after the last view build, and a crashed write left a temp file behind.
    for batch_id in (3, 4):
        start = utc(2024, 2, 11, 1, batch_id)
        write_microbatch(
            lake, batch_id, speed_candles(minute_rows("BTCUSDT", start, 1, 250.0), batch_id, start), committed=start
        )
    orphan = lake / "daily_raw" / "symbol=BTCUSDT" / ".tmp-part-0.parquet.123.abc"
    orphan.write_bytes(b"x" * 100)
    old = time.time() - 7200
    os.utime(orphan, (old, old))

    speed = lake.parent / "speed"  # the speed layer's state, outside the lake
    MissedLog(speed).open("BTCUSDT", 0, "disconnected")
    quarantine_path(speed, 4).parent.mkdir(parents=True)
    quarantine_path(speed, 4).write_text('{"offset": 1}\n')

    code, out, _ = run(capsys, "storage")
    assert code == 0
    assert "speed-state            missed                    2" in out  # stretches and their lock file
    assert "speed-state            quarantine                1" in out
    assert "unified_view           symbol=BTCUSDT" in out and "speed/candles_1m       batch=*" in out
    assert "speed/candles_1m: 2 committed micro-batch dir(s)" in out  # batches 2 and 3; 4 is the newest
    assert "orphaned temp files (older than 1 h): 1" in out

    code, out, _ = run(capsys, "storage", "--reclaim")
    assert (
        code == 0 and "compacted 2 micro-batch(es) through batch 3" in out and "removed 1 orphaned temp file(s)" in out
    )
    assert not orphan.exists()
    assert [i for i, _ in batch_dirs(lake, CANDLES_1M)] == [4]
    assert pl.read_parquet(compacted_file(lake, CANDLES_1M))["batch_id"].unique().sort().to_list() == [1, 2, 3]
