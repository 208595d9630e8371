"""The replay's WebSocket streams with a real websockets client: format, pacing, the recorded candle at the
close of each minute, trades, speed-up and every fault."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from crypto_assets.exchange.replay.clock import ReplayClock
from crypto_assets.exchange.replay.server import ReplayServer

pytestmark = pytest.mark.integration  # a replay exchange server

START = datetime(2021, 3, 26, 3, tzinfo=UTC)
START_MS_FOR_CLOCK = int(START.timestamp() * 1000)
MINUTE_MS = 60_000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def receive_until(ws, done, limit: float = 20.0) -> list[str]:
    """Messages until ``done(messages)`` is true; fails after ``limit`` seconds."""
    messages: list[str] = []
    async with asyncio.timeout(limit):
        while not done(messages):
            messages.append(await ws.recv())
    return messages


def final_kline_of(minute: datetime):
    t = ms(minute)
    return lambda messages: any(f'"t":{t},' in m and '"x":true' in m for m in messages)


@pytest.fixture(scope="module")
def streamed(market_2021):
    """03:00 to the close of 03:03 on a combined kline + trade stream, at 60x (a replay minute per second)."""

    async def run(url):
        async with connect(f"{url}/stream?streams=btcusdt@kline_1m/btcusdt@trade") as ws:
            return await receive_until(ws, final_kline_of(START + timedelta(minutes=3)))

    with ReplayServer(market_2021, start=START, speed=60) as replay:
        messages = asyncio.run(run(replay.ws_url))
    return [json.loads(m) for m in messages]


def test_combined_stream_wraps_each_event(streamed):
    assert {m["stream"] for m in streamed} == {"btcusdt@kline_1m", "btcusdt@trade"}
    for message in streamed:
        assert message["data"]["e"] == {"btcusdt@kline_1m": "kline", "btcusdt@trade": "trade"}[message["stream"]]
        assert message["data"]["s"] == "BTCUSDT"
    times = [m["data"]["E"] for m in streamed]
    assert times == sorted(times)


def test_kline_updates_every_two_seconds_then_the_recorded_candle(streamed, recorded_2021):
    for minute in (1, 2, 3):
        t = ms(START + timedelta(minutes=minute))
        updates = [m["data"] for m in streamed if m["stream"] == "btcusdt@kline_1m" and m["data"]["k"]["t"] == t]
        assert [u["E"] - t for u in updates] == list(range(0, 60_000, 2_000)) + [60_000]
        assert [u["k"]["x"] for u in updates] == [False] * 30 + [True]
        assert all(u["k"]["T"] == t + 59_999 and u["k"]["i"] == "1m" for u in updates)
        final = updates[-1]["k"]
        row = recorded_2021.row(minute, named=True)
        assert (float(final["o"]), float(final["h"]), float(final["l"]), float(final["c"]), float(final["v"])) == (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["volume"],
        )  # exactly: the strings parse back to the recorded float64 values
        # The partial candle only grows towards the final one.
        volumes = [float(u["k"]["v"]) for u in updates]
        assert volumes == sorted(volumes) and volumes[-1] == row["volume"]
        assert all(float(u["k"]["h"]) <= row["high"] and float(u["k"]["l"]) >= row["low"] for u in updates)


def test_trades_are_consistent_with_the_candle(streamed, recorded_2021):
    for minute in (1, 2, 3):
        t = ms(START + timedelta(minutes=minute))
        trades = [m["data"] for m in streamed if m["stream"] == "btcusdt@trade" and t <= m["data"]["T"] < t + MINUTE_MS]
        row = recorded_2021.row(minute, named=True)
        prices = [float(x["p"]) for x in trades]
        assert trades[0]["T"] == t and prices[0] == row["open"] and prices[-1] == row["close"]
        assert max(prices) == row["high"] and min(prices) == row["low"]
        assert sum(float(x["q"]) for x in trades) == pytest.approx(row["volume"], abs=1e-7)
        ids = [x["t"] for x in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        final = next(
            m["data"]["k"]
            for m in streamed
            if m["stream"] == "btcusdt@kline_1m" and m["data"]["k"]["t"] == t and m["data"]["k"]["x"]
        )
        assert (final["f"], final["L"], final["n"]) == (ids[0], ids[-1], len(ids))
        assert set(trades[0]) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}


def test_raw_stream_sends_bare_events_and_takes_subscriptions(market_2021):
    async def run(url):
        async with connect(f"{url}/ws/btcusdt@trade") as ws:
            first = json.loads(await ws.recv())
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            replies, kinds = {}, set()
            async with asyncio.timeout(10):
                while len(replies) < 2 or kinds != {"trade", "kline"}:
                    message = json.loads(await ws.recv())
                    if "id" in message:
                        replies[message["id"]] = message
                    else:
                        kinds.add(message["e"])
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 9}))
            async with asyncio.timeout(10):
                while "error" not in (message := json.loads(await ws.recv())):
                    pass
            return first, replies, kinds, message

    with ReplayServer(market_2021, start=START, speed=60) as replay:
        first, replies, kinds, error = asyncio.run(run(replay.ws_url))
    assert first["e"] == "trade" and "stream" not in first
    assert replies[7] == {"result": None, "id": 7}
    assert replies[8] == {"result": ["btcusdt@trade", "btcusdt@kline_1m"], "id": 8}
    assert kinds == {"trade", "kline"}
    assert error["id"] == 9 and "unknown symbol" in error["error"]["msg"]


def test_unknown_streams_are_refused_at_the_handshake(market_2021):
    async def run(url):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{url}/stream?streams=btcusdt@depth"):
                pass
        return refused.value.response

    with ReplayServer(market_2021, start=START) as replay:
        response = asyncio.run(run(replay.ws_url))
    assert response.status_code == 400 and b"kline_1m" in response.body


def test_the_replay_clock_runs_at_n_times_real_time():
    real = [100.0]
    clock = ReplayClock(START_MS_FOR_CLOCK, speed=600, monotonic=lambda: real[0])
    assert clock.now_ms() == START_MS_FOR_CLOCK
    real[0] += 1.5
    assert clock.now_ms() == START_MS_FOR_CLOCK + 900_000  # 1.5 s at 600x: fifteen replay minutes
    assert clock.seconds_until(START_MS_FOR_CLOCK + 960_000) == pytest.approx(0.1)


def test_speed_up_and_a_clock_shared_by_connections(market_2021):
    """At 600x ten replay minutes pass each second; a second connection opened later sees the same events."""

    async def run(url):
        stream = f"{url}/ws/btcusdt@kline_1m"
        async with connect(stream) as early:
            first = json.loads(await early.recv())
            await asyncio.sleep(1.0)
            async with connect(stream) as late:
                joined = json.loads(await late.recv())
                later = []
                async with asyncio.timeout(10):
                    while len(later) < 40:
                        later.append(await late.recv())
            seen = []
            async with asyncio.timeout(10):
                while not seen or json.loads(seen[-1])["E"] < json.loads(later[-1])["E"]:
                    seen.append(await early.recv())
        return first, joined, later, seen

    with ReplayServer(market_2021, start=START, speed=600) as replay:
        first, joined, later, seen = asyncio.run(run(replay.ws_url))
    assert joined["E"] - first["E"] >= 300_000  # a second of real time later, the shared clock is minutes ahead
    assert set(later) <= set(seen)  # byte-identical events for the same replay moments


def test_the_stream_skips_real_outages(market_2021, recorded_2021):
    """Around the 150-minute outage of the recording, the stream goes quiet and resumes with the next candle."""
    times = recorded_2021["open_time"]
    gap_index = int((times.diff().dt.total_minutes() > 1).arg_max())
    before, after = times[gap_index - 1], times[gap_index]

    async def run(url):
        async with connect(f"{url}/ws/btcusdt@kline_1m") as ws:
            return await receive_until(ws, final_kline_of(after), limit=30)

    with ReplayServer(market_2021, start=before, speed=3000) as replay:
        messages = [json.loads(m) for m in asyncio.run(run(replay.ws_url))]
    opens = sorted({m["k"]["t"] for m in messages})
    assert opens == [ms(before), ms(after)]


# -- faults -------------------------------------------------------------------------------------------------


@pytest.fixture
def replay(market_2021):
    with ReplayServer(market_2021, start=START, speed=60) as server:
        yield server


def post_faults(replay: ReplayServer, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{replay.rest_url}/_replay/faults",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_drop_now_cuts_connections_without_a_close_frame(replay):
    async def run():
        async with connect(f"{replay.ws_url}/ws/btcusdt@trade") as ws:
            await ws.recv()
            assert await asyncio.to_thread(replay.drop_connections) == 1
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            return closed.value

    closed = asyncio.run(run())
    assert closed.rcvd is None  # no close frame: the TCP connection just ended


def test_drop_after_n_messages_through_the_control_endpoint(replay):
    async def run():
        async with connect(f"{replay.ws_url}/ws/btcusdt@kline_1m") as ws:
            await ws.recv()
            status, state = await asyncio.to_thread(post_faults, replay, {"ws_drop_after": 5})
            assert status == 200 and state["ws_drop_after"] == 5
            received = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(15):
                    while True:
                        received.append(await ws.recv())
            return received, closed.value

    received, closed = asyncio.run(run())
    assert len(received) == 5 and closed.rcvd is None
    assert replay.status()["faults"]["ws_drop_after"] == 0


def _parsed(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_malformed_messages_are_extra_and_lose_nothing(replay):
    """Each of the next two messages is preceded by one that is not JSON; no update goes missing. A message
    already on its way when the fault is injected comes first, so the count matters, not the position."""

    async def run():
        async with connect(f"{replay.ws_url}/stream?streams=btcusdt@kline_1m") as ws:
            await ws.recv()
            replay.inject(ws_malformed=2)
            return await receive_until(
                ws, lambda m: sum(_parsed(t) is None for t in m) >= 2 and _parsed(m[-1]) is not None and len(m) >= 8
            )

    parsed = [_parsed(text) for text in asyncio.run(run())]
    bad = [i for i, p in enumerate(parsed) if p is None]
    assert len(bad) == 2 and all(parsed[i + 1] is not None for i in bad), parsed
    good = [p["data"]["E"] for p in parsed if p is not None]
    assert all(b - a in (0, 2000) for a, b in itertools.pairwise(good))  # no update went missing


def test_server_shutdown_event_then_close(replay):
    async def run():
        async with connect(f"{replay.ws_url}/stream?streams=btcusdt@trade") as ws:
            await ws.recv()
            status, _ = await asyncio.to_thread(post_faults, replay, {"ws_server_shutdown": 0.2})
            assert status == 200
            messages = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        messages.append(json.loads(await ws.recv()))
            return messages, closed.value

    messages, closed = asyncio.run(run())
    shutdown = [m for m in messages if m.get("e") == "serverShutdown"]
    assert len(shutdown) == 1 and isinstance(shutdown[0]["E"], int)
    assert messages[-1] == shutdown[0] or all("stream" in m for m in messages[messages.index(shutdown[0]) + 1 :])
    assert closed.rcvd is not None and closed.rcvd.code == 1001


def test_maximum_connection_lifetime(replay):
    replay.inject(ws_max_lifetime_seconds=1.0)

    async def run():
        async with connect(f"{replay.ws_url}/ws/btcusdt@kline_1m") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(30):  # a server that never closed it would fail here
                    while True:
                        await ws.recv()
            return closed.value

    closed = asyncio.run(run())
    assert closed.rcvd.code == 1000 and closed.rcvd.reason == "connection lifetime reached"


def test_control_endpoint_rejects_unknown_faults(replay):
    status, body = post_faults(replay, {"ws_explode": 1})
    assert status == 400 and "unknown fault 'ws_explode'" in body["error"]
    status, body = post_faults(replay, {"rest_429": -1})
    assert status == 400 and "rest_429" in body["error"]


def test_a_recording_with_a_later_start_streams_other_symbols(market_2021):
    """The ETH recording of 2021 starts in August: at a March clock its stream is silent, REST has nothing."""
    with ReplayServer(market_2021, start=START) as replay:
        url = f"{replay.rest_url}/api/v3/klines?symbol=ETHUSDT&interval=1m"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read()) == []


def test_the_server_stops_when_a_client_left_after_the_recording_ran_out(market_2021):
    """A connection with nothing left to send still ends when its client goes, so stopping the server (Ctrl-C on
    ``exchange-replay``) does not wait forever for its handler."""
    end = market_2021.candles["BTCUSDT"].last_ms
    start = datetime.fromtimestamp(end / 1000, UTC) - timedelta(minutes=1)

    async def run(url):
        async with connect(f"{url}/ws/btcusdt@kline_1m") as ws:
            await receive_until(ws, final_kline_of(datetime.fromtimestamp(end / 1000, UTC)))
        await asyncio.sleep(0.5)  # the recording is over: the handler has nothing to send from here on

    replay = ReplayServer(market_2021, start=start, speed=60).start()
    try:
        asyncio.run(run(replay.ws_url))
        assert replay.status()["ws_connections"] == 0
    finally:
        replay.stop()
