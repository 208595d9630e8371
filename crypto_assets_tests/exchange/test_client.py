"""The REST client against the replay server: real sockets, real recorded data, injected faults."""

from __future__ import annotations

import http.client
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from crypto_assets.exchange.binance import USED_WEIGHT_HEADER
from crypto_assets.exchange.client import ExchangeClient, ExchangeError, RetryPolicy
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets.settings import ExchangeSettings

pytestmark = pytest.mark.integration  # a replay exchange server

FAST_RETRY = RetryPolicy(attempts=4, backoff_seconds=0.05, backoff_max_seconds=0.2)
START = datetime(2021, 3, 26, 3, tzinfo=UTC)


def client_for(replay: ReplayServer, **kwargs) -> ExchangeClient:
    timeout = kwargs.pop("timeout", 5.0)
    limit = kwargs.pop("weight_limit", 6000)
    settings = ExchangeSettings(
        rest_url=replay.rest_url, ws_url=replay.ws_url, timeout_seconds=timeout, weight_limit_per_minute=limit
    )
    return ExchangeClient(settings, retry=kwargs.pop("retry", FAST_RETRY), **kwargs)


@pytest.fixture(scope="module")
def replay(market_2021):
    with ReplayServer(market_2021) as server:
        yield server


@pytest.fixture(autouse=True)
def no_faults_left(request):
    yield
    if "replay" in request.fixturenames:
        request.getfixturevalue("replay").clear_faults()


def test_pages_match_the_recorded_csv_exactly(replay, recorded_2021):
    rows_seen = []
    with client_for(replay) as client:
        pages = list(client.klines("BTCUSDT", START, START + timedelta(days=2), progress=rows_seen.append))
    assert [p.height for p in pages] == [1000, 1000, 880]  # two whole days, more than one page
    frame = pl.concat(pages)
    assert frame.schema == MINUTE_SCHEMA
    assert rows_seen == [1000, 1000, 880]
    expected = recorded_2021.filter(pl.col("open_time") < START + timedelta(days=2))
    assert frame.drop("symbol").equals(expected)  # float64 values parse back bit for bit


def test_microsecond_time_unit_gives_the_same_pages(replay, recorded_2021):
    end = START + timedelta(hours=30)
    with client_for(replay) as ms_client, client_for(replay, microseconds=True) as us_client:
        in_ms = ms_client.klines_frame("BTCUSDT", START, end)
        in_us = us_client.klines_frame("BTCUSDT", START, end)
    assert in_us.height == 30 * 60
    assert in_us.equals(in_ms)


def test_real_outage_gaps_are_skipped_and_the_end_is_found(replay, recorded_2021):
    """The whole 2021 BTC recording: 50,000 rows over 35 days with real outages of 150 and 284 minutes."""
    with client_for(replay) as client:
        frame = client.klines_frame("BTCUSDT", datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC))
        requests = client.requests_sent
    assert frame.drop("symbol").equals(recorded_2021)
    gaps = frame.select(pl.col("open_time").diff().dt.total_minutes() - 1).to_series().drop_nulls()
    assert sorted(gaps.filter(gaps > 0).to_list()) == [150, 284]
    assert requests <= 52  # 50 pages, one time request, and the empty answer that ends the range


def test_a_range_without_candles_yields_nothing(replay):
    with client_for(replay) as client:
        assert list(client.klines("BTCUSDT", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC))) == []
        assert list(client.klines("BTCUSDT", START, START)) == []


def test_unknown_symbol_is_a_clear_error_without_retries(replay):
    with client_for(replay) as client, pytest.raises(ExchangeError) as error:
        list(client.klines("DOGEUSDT", START, START + timedelta(hours=1)))
    assert error.value.code == -1121 and "Invalid symbol" in str(error.value)
    assert f"{replay.rest_url}/api/v3/klines?symbol=DOGEUSDT" in str(error.value)


def test_injected_429s_are_waited_out_and_never_earn_a_ban(replay, recorded_2021):
    before = replay.status()["rest_status_counts"]
    replay.inject(rest_429=2, rest_429_retry_after=1)
    with client_for(replay) as client:
        frame = client.klines_frame("BTCUSDT", START, START + timedelta(hours=20))
    assert frame.height == 1200  # and no 418: a request sent before Retry-After had passed would have drawn one
    counts = replay.status()["rest_status_counts"]
    assert int(counts.get("429", 0)) - int(before.get("429", 0)) == 2
    assert counts.get("418", 0) == before.get("418", 0)


def test_server_errors_are_retried(replay):
    replay.inject(rest_5xx=3, rest_5xx_status=502)
    with client_for(replay) as client:
        frame = client.klines_frame("BTCUSDT", START, START + timedelta(hours=1))
    assert frame.height == 60


def test_persistent_server_errors_end_in_an_error_naming_the_request(replay):
    replay.inject(rest_5xx=100)
    with client_for(replay) as client, pytest.raises(ExchangeError) as error:
        client.klines_frame("BTCUSDT", START, START + timedelta(hours=1), closed_only=False)
    message = str(error.value)
    assert "failed after 4 attempts: HTTP 503" in message
    assert "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=1616727600000" in message


def test_slow_answers_time_out_and_are_retried(replay):
    replay.inject(rest_delay_ms=1500, rest_delay_count=2)
    with client_for(replay, timeout=0.5) as client:
        frame = client.klines_frame("BTCUSDT", START, START + timedelta(hours=1))
    assert frame.height == 60


def test_timeouts_that_never_end_are_an_error(replay):
    replay.inject(rest_delay_ms=1000)
    with client_for(replay, timeout=0.2) as client, pytest.raises(ExchangeError) as error:
        client.klines_frame("BTCUSDT", START, START + timedelta(hours=1))
    assert "failed after 4 attempts" in str(error.value) and "timed out" in str(error.value)


def test_client_stays_inside_the_weight_budget(market_2021):
    """A budget of 10 weight per 1 s window allows 5 klines requests a window; 11 pages need 3 windows,
    and the server never has to answer 429 or 418."""
    with ReplayServer(market_2021, weight_limit=10, weight_window_seconds=1.0) as small:
        with client_for(small, weight_limit=10, weight_window_seconds=1.0) as client:
            frame = client.klines_frame("BTCUSDT", START, START + timedelta(minutes=11_000), closed_only=False)
        counts = small.status()["rest_status_counts"]
    assert frame.height == 11_000
    assert counts == {"200": 11}  # the server counted every request against its 10 a window: no 429


def test_a_client_that_ignores_429_is_banned_and_the_client_obeys_the_ban(market_2021):
    """The server enforces its own budget even against a client configured with a larger one: it answers 429,
    and a request sent before Retry-After would be 418. The client obeys the 429s, so it never sees 418."""
    with ReplayServer(market_2021, weight_limit=6, weight_window_seconds=1.0, ban_seconds=1.0) as small:
        with client_for(small, weight_limit=6000, weight_window_seconds=1.0) as client:
            frame = client.klines_frame("BTCUSDT", START, START + timedelta(minutes=6000), closed_only=False)
        counts = small.status()["rest_status_counts"]
        assert frame.height == 6000
        assert int(counts.get("429", 0)) >= 1 and "418" not in counts

        # A raw client that retries at once after a 429 is banned.
        conn = http.client.HTTPConnection("127.0.0.1", small.rest_port, timeout=5)
        statuses = []
        while 418 not in statuses and len(statuses) < 30:
            conn.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1")
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        assert statuses[-1] == 418 and statuses[-2] == 429
        assert int(response.getheader("Retry-After")) >= 1


def test_the_candle_still_forming_is_left_out(market_2021, recorded_2021):
    """With the clock in the middle of a minute, the exchange shows that candle partly formed; the client
    returns only closed candles unless asked otherwise."""
    clock = START + timedelta(minutes=10, seconds=30)
    with ReplayServer(market_2021, start=clock) as replay, client_for(replay) as client:
        closed = client.klines_frame("BTCUSDT", START, START + timedelta(hours=1))
        everything = client.klines_frame("BTCUSDT", START, START + timedelta(hours=1), closed_only=False)
    assert closed.height == 10 and everything.height == 11
    assert closed.drop("symbol").equals(recorded_2021.head(10))
    partial, final = everything.row(10, named=True), recorded_2021.row(10, named=True)
    assert partial["open"] == final["open"] and partial["volume"] < final["volume"]


def cuts(replay: ReplayServer) -> dict[str, int]:
    return dict(replay.status()["rest_cut_counts"])


def delta(after: dict[str, int], before: dict[str, int], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


@pytest.mark.parametrize("fault", ["rest_drop", "rest_truncate"])
def test_dropped_connections_are_retried(replay, recorded_2021, fault):
    """The server reads the request and cuts the connection, without an answer or halfway through the body."""
    before = cuts(replay)
    replay.inject(**{fault: 2})
    with client_for(replay) as client:
        frame = client.klines_frame("BTCUSDT", START, START + timedelta(hours=1))
        requests = client.requests_sent
    assert frame.drop("symbol").equals(recorded_2021.head(60))
    assert delta(cuts(replay), before, "dropped" if fault == "rest_drop" else "truncated") == 2
    assert requests == 2 + 2  # the time and the klines request, and one retry for each cut


def test_connections_that_keep_dropping_end_in_an_error_naming_the_request(replay):
    replay.inject(rest_drop=100)
    with client_for(replay) as client, pytest.raises(ExchangeError) as error:
        client.klines_frame("BTCUSDT", START, START + timedelta(hours=1), closed_only=False)
    message = str(error.value)
    assert "failed after 4 attempts" in message and "RemoteDisconnected" in message
    assert f"{replay.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=1616727600000" in message


def test_malformed_bodies_are_retried_with_backoff(replay, recorded_2021):
    before = cuts(replay)
    replay.inject(rest_malformed=2)
    slept: list[float] = []
    with client_for(replay, sleep=lambda s: (slept.append(s), time.sleep(s))) as client:
        frame = client.klines_frame("BTCUSDT", START, START + timedelta(hours=1))
    assert frame.drop("symbol").equals(recorded_2021.head(60))
    assert delta(cuts(replay), before, "malformed") == 2
    assert len(slept) == 2 and all(0 < s <= FAST_RETRY.backoff_max_seconds for s in slept)  # one backoff per retry


def test_bodies_that_stay_malformed_end_in_an_error_naming_the_request(replay):
    """A bounded number of attempts (RetryPolicy.attempts), then an error that names the request and shows the body."""
    before = cuts(replay)
    replay.inject(rest_malformed=100)
    with client_for(replay) as client, pytest.raises(ExchangeError) as error:
        client.klines_frame("BTCUSDT", START, START + timedelta(hours=1), closed_only=False)
    message = str(error.value)
    assert "failed after 4 attempts: HTTP 200 with a body that is not JSON" in message
    assert f"{replay.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=1616727600000" in message
    assert "b'[[1616727600000," in message  # the start of what came back
    assert delta(cuts(replay), before, "malformed") == FAST_RETRY.attempts  # and not one request more


def test_a_418_is_obeyed_without_hammering(replay, recorded_2021):
    """An injected 418 bans this IP for Retry-After seconds; any request sent during the ban would draw another
    418. The client waits it out, so the server answers exactly one 418 and then serves the range."""
    before = replay.status()["rest_status_counts"]
    replay.inject(rest_418=1, rest_418_retry_after=1)
    slept: list[float] = []
    with client_for(replay, sleep=lambda s: (slept.append(s), time.sleep(s))) as client:
        frame = client.klines_frame("BTCUSDT", START, START + timedelta(hours=3))
        requests = client.requests_sent
    assert frame.drop("symbol").equals(recorded_2021.head(180))
    after = replay.status()["rest_status_counts"]
    assert delta(after, before, "418") == 1
    assert requests == 3  # the time request that drew the 418, the same again after the ban, one klines page
    assert len(slept) == 1  # one wait, for the ban (the server's clock says it was long enough: no second 418)


def test_a_ban_longer_than_the_client_waits_is_an_error_at_once(market_2021):
    with ReplayServer(market_2021) as banning:
        banning.inject(rest_418=1, rest_418_retry_after=3600)
        with client_for(banning) as client, pytest.raises(ExchangeError) as error:
            client.klines_frame("BTCUSDT", START, START + timedelta(hours=1), closed_only=False)
        assert client.requests_sent == 1
    assert error.value.status == 418 and "Retry-After 3600s is longer than the client waits (600s)" in str(error.value)
    assert "/api/v3/klines?symbol=BTCUSDT" in str(error.value)


def _wait_for_window_start(window: float) -> None:
    time.sleep(window - time.time() % window + 0.02)


def test_weight_used_by_another_client_on_the_same_ip_is_respected(market_2021):
    """Another client on this IP has used 16 of the 20 weight a window allows. The first answer's
    X-MBX-USED-WEIGHT-1M says 18, so after one more page the client waits for the next window. A client that
    counted only its own requests would send its four pages (8 weight) into the window and draw a 429."""
    window = 3.0
    with ReplayServer(market_2021, weight_limit=20, weight_window_seconds=window) as small:
        for _ in range(3):
            _wait_for_window_start(window)
            other = http.client.HTTPConnection("127.0.0.1", small.rest_port, timeout=5)
            for _ in range(8):  # weight 2 each
                other.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1")
                other.getresponse().read()
            other.close()
            answers: list[tuple[int, int]] = []
            with client_for(small, weight_limit=20, weight_window_seconds=window) as client:
                send = client._send

                def recording(target, send=send, answers=answers):
                    status, headers, body = send(target)
                    answers.append((status, int(headers[USED_WEIGHT_HEADER])))
                    return status, headers, body

                client._send = recording
                frame = client.klines_frame("BTCUSDT", START, START + timedelta(minutes=4000), closed_only=False)
            if answers[0][1] == 18:  # the other client's weight and the first page fell in one window
                break
        else:
            pytest.fail("the weight window rolled over before the client's first request three times in a row")
        counts = small.status()["rest_status_counts"]
    assert frame.height == 4000
    assert [status for status, _ in answers] == [200] * 4
    assert answers[1][1] == 20 and answers[2][1] == 2  # the third page waited for a fresh window
    assert "429" not in counts and "418" not in counts


class _BadKlines(BaseHTTPRequestHandler):
    rows = [
        [1616727600000, "1", "2", "0.5", "1.5", "10", 1616727659999, "15", 3, "5", "7", "0"],
        [1616727660000, "1", "2", "0.5", "n/a", "10", 1616727719999, "15", 3, "5", "7", "0"],
    ]

    def do_GET(self):
        body = json.dumps(self.rows).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_answer_that_is_json_but_not_klines_names_the_request_kline_and_field():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadKlines)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = ExchangeSettings(rest_url=f"http://127.0.0.1:{server.server_port}", timeout_seconds=5)
        with ExchangeClient(settings, retry=FAST_RETRY) as client, pytest.raises(ExchangeError) as error:
            client.klines_frame("BTCUSDT", START, START + timedelta(hours=1), closed_only=False)
    finally:
        server.shutdown()
        server.server_close()
    message = str(error.value)
    assert f"GET http://127.0.0.1:{server.server_port}/api/v3/klines?symbol=BTCUSDT" in message
    assert "kline 2 (open_time 1616727660000): field 'close' = 'n/a' is not a decimal number" in message
