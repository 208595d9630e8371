"""The replay's REST side spoken to with plain HTTP: Binance's kline format, parameters and errors, the
synthetic live market, and the command-line server as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from crypto_assets.exchange.client import ExchangeClient
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.settings import ExchangeSettings

pytestmark = pytest.mark.integration  # a replay exchange server, and the command-line one in a subprocess

START = datetime(2021, 3, 26, 3, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture(scope="module")
def replay(market_2021):
    with ReplayServer(market_2021) as server:
        yield server


def test_klines_are_binance_arrays(replay, recorded_2021):
    status, headers, rows = get(
        f"{replay.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={START_MS}&limit=2"
    )
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"].isdigit()
    assert len(rows) == 2 and all(len(row) == 12 for row in rows)
    first = rows[0]
    assert first[0] == START_MS and first[6] == START_MS + 59_999
    assert first[1:6] == ["51696.70000000", "51926.17000000", "51696.70000000", "51827.72000000", "73.90240000"]
    assert all(isinstance(first[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10)) and first[8] == 12 and first[11] == "0"
    assert rows[1][0] == START_MS + 60_000


def test_microsecond_header(replay):
    _, _, rows = get(
        f"{replay.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={START_MS}&limit=1",
        {"X-MBX-TIME-UNIT": "MICROSECOND"},
    )
    assert rows[0][0] == START_MS * 1000 and rows[0][6] == START_MS * 1000 + 59_999_999
    _, _, server_time = get(f"{replay.rest_url}/api/v3/time", {"X-MBX-TIME-UNIT": "MICROSECOND"})
    assert server_time["serverTime"] > 10**15


def test_time_window_semantics(replay, recorded_2021):
    base = f"{replay.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m"
    end_ms = START_MS + 9 * 60_000
    _, _, both = get(f"{base}&startTime={START_MS}&endTime={end_ms}")
    assert [r[0] for r in both] == [START_MS + i * 60_000 for i in range(10)]  # endTime is inclusive of open time
    _, _, only_end = get(f"{base}&endTime={end_ms}&limit=3")
    assert [r[0] for r in only_end] == [end_ms - 120_000, end_ms - 60_000, end_ms]
    _, _, latest = get(base)
    assert len(latest) == 500  # default limit
    assert latest[-1][0] == int(recorded_2021["open_time"][-1].timestamp() * 1000)
    _, _, most = get(f"{base}&startTime={START_MS}&limit=1000")
    assert len(most) == 1000


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("symbol=DOGEUSDT&interval=1m", -1121),
        ("interval=1m", -1102),
        ("symbol=BTCUSDT", -1102),
        ("symbol=BTCUSDT&interval=7m", -1120),
        ("symbol=BTCUSDT&interval=1m&limit=1001", -1100),
        ("symbol=BTCUSDT&interval=1m&limit=abc", -1100),
        ("symbol=BTCUSDT&interval=1m&startTime=yesterday", -1100),
        (f"symbol=BTCUSDT&interval=1m&startTime={START_MS + 1}&endTime={START_MS}", -1023),
    ],
)
def test_bad_parameters_get_binance_errors(replay, query, code):
    status, headers, body = get(f"{replay.rest_url}/api/v3/klines?{query}")
    assert status == 400 and body["code"] == code and body["msg"]
    assert "X-MBX-USED-WEIGHT-1M" in headers


def test_ping_and_control_status(replay):
    assert get(f"{replay.rest_url}/api/v3/ping")[2] == {}
    status = get(f"{replay.rest_url}/_replay/status")[2]
    assert status["symbols"]["BTCUSDT"]["rows"] == 50_000
    assert status["clock_ms"] >= status["symbols"]["ETHUSDT"]["last_ms"]  # a recording is wholly servable


def test_the_future_is_not_served(market_2021):
    """With the clock at 03:05:30 the newest candle is 03:05, formed for 30 s."""
    with ReplayServer(market_2021, start=START + timedelta(minutes=5, seconds=30)) as replay:
        _, _, rows = get(
            f"{replay.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={START_MS}&endTime={START_MS + 3_600_000}"
        )
    assert [r[0] for r in rows] == [START_MS + i * 60_000 for i in range(6)]
    assert rows[-1][8] < 12 and float(rows[-1][5]) > 0


def test_synthetic_market_runs_live_from_now_and_is_deterministic():
    market = Market.synthetic("tiny", seed=7)
    assert market.live
    before = time.time()
    with ReplayServer(market) as replay, ExchangeClient(ExchangeSettings(rest_url=replay.rest_url)) as client:
        now_ms = client.server_time_ms()
        recent = client.klines_frame(
            "BTCUSDT", datetime.now(UTC) - timedelta(minutes=30), datetime.now(UTC) + timedelta(minutes=5)
        )
    assert abs(now_ms / 1000 - before) < 60
    assert 29 <= recent.height <= 31  # every minute of the last half hour, none from the future
    assert recent["open_time"].diff().drop_nulls().dt.total_minutes().to_list() == [1] * (recent.height - 1)
    # The same seed shows the same prices for the same minutes, whenever the replay started.
    again = Market.synthetic("tiny", seed=7)
    again.ensure(int(before * 1000) + 3_600_000)
    theirs = again.candles["BTCUSDT"]
    for row in recent.iter_rows(named=True):
        index = theirs.index_of(int(row["open_time"].timestamp() * 1000))
        assert theirs.row(index)[1:] == (row["open"], row["high"], row["low"], row["close"], row["volume"])


def test_command_line_server_binds_localhost_and_stops_on_sigterm(btc_2021, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "CRYPTO_ASSETS_HOME": str(tmp_path / "home")}
    command = [
        sys.executable,
        "-m",
        "crypto_assets.cli",
        "exchange-replay",
        "--source",
        str(btc_2021),
        "--start",
        "2021-03-26T03:00:00",
        "--speed",
        "60",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"REST (http://127\.0\.0\.1:\d+)  WS (ws://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        rest_url = match.group(1)
        status, _, rows = get(f"{rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={START_MS}&limit=1")
        assert status == 200 and rows[0][1] == "51696.70000000"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "replaying" in proc.stderr.read()


def test_command_line_reports_unusable_sources(tmp_path):
    bad = tmp_path / "BTCUSDT_bad.csv"
    bad.write_text("date,o,h,l,c,v\n2021-01-01,1,1,1,1,1\n")
    env = {**os.environ, "PYTHONPATH": REPO, "CRYPTO_ASSETS_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "crypto_assets.cli", "exchange-replay", "--source", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and f"{bad}:1: header" in done.stderr


def test_a_lake_serves_what_was_ingested(btc_2021, tmp_path, recorded_2021):
    from crypto_assets.batch.minute_ingest import ingest_window
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    sources, _ = discover_sources([SourceSpec(str(btc_2021))], ["BTCUSDT"])
    ingest_window(
        sources, tmp_path / "lake", ["BTCUSDT"], datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 5, 1, tzinfo=UTC)
    )
    market = Market.from_lake(tmp_path / "lake")
    with ReplayServer(market) as replay, ExchangeClient(ExchangeSettings(rest_url=replay.rest_url)) as client:
        frame = client.klines_frame("BTCUSDT", datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 5, 1, tzinfo=UTC))
    assert frame.drop("symbol").equals(recorded_2021)


def post_faults(replay: ReplayServer, body: dict) -> dict:
    request = urllib.request.Request(
        f"{replay.rest_url}/_replay/faults",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_rest_faults_through_the_control_endpoint_as_a_plain_client_sees_them(replay):
    import http.client

    query = f"/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={START_MS}&limit=10"

    def raw() -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", replay.rest_port, timeout=10)
        try:
            conn.request("GET", query)
            response = conn.getresponse()
            return response.status, response.read(), dict(response.headers)
        finally:
            conn.close()

    state = post_faults(replay, {"rest_drop": 1, "rest_truncate": 1, "rest_malformed": 1})
    assert (state["rest_drop"], state["rest_truncate"], state["rest_malformed"]) == (1, 1, 1)
    with pytest.raises(http.client.RemoteDisconnected):
        raw()  # no answer at all
    with pytest.raises(http.client.IncompleteRead):
        raw()  # the head announces the whole body, half of it comes
    status, body, _ = raw()
    assert status == 200 and body.startswith(b"[[1616727600000,")
    with pytest.raises(ValueError):
        json.loads(body)
    status, body, _ = raw()
    assert status == 200 and len(json.loads(body)) == 10  # the faults are used up

    post_faults(replay, {"rest_418": 1, "rest_418_retry_after": 1})
    status, body, headers = raw()
    assert status == 418 and json.loads(body)["code"] == -1003 and headers["Retry-After"] == "1"
    assert raw()[0] == 418  # sent during the ban
    time.sleep(1.1)
    assert raw()[0] == 200
    assert replay.status()["rest_cut_counts"] == {"dropped": 1, "malformed": 1, "truncated": 1}


def control_post(replay: ReplayServer, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", replay.rest_port, timeout=10)
    try:
        conn.putrequest("POST", path, skip_host="Host" in headers)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 415),  # what a browser's cross-site "simple" POST can send
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({"Content-Type": "application/json", "Host": "evil.example:8080"}, 403),  # DNS rebinding
        ({"Content-Type": "application/json", "Host": "127.0.0.1.evil.example"}, 403),
        ({"Content-Type": "application/json", "Host": ""}, 403),
    ],
)
def test_control_posts_need_json_and_a_loopback_host(replay, headers, status):
    for path in ("/_replay/faults", "/_replay/faults/clear"):
        body = json.dumps({"rest_429": 5}).encode()
        code, answer = control_post(replay, path, body, headers)
        assert code == status and "error" in answer, (path, answer)
        assert get(f"{replay.rest_url}/_replay/faults")[2]["rest_429"] == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST:1234"])
def test_control_posts_from_a_local_client_are_accepted(replay, host):
    headers = {"Content-Type": "application/json; charset=utf-8", "Host": host}
    code, answer = control_post(replay, "/_replay/faults", json.dumps({"rest_delay_ms": 1}).encode(), headers)
    assert code == 200 and answer["rest_delay_ms"] == 1
    code, answer = control_post(replay, "/_replay/faults/clear", b"", headers)
    assert code == 200 and answer["rest_delay_ms"] == 0
