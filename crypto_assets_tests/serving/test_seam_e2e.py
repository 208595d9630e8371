"""The seam end to end on real data: the replay exchange serves recorded Binance minutes shifted to the present,
the producer streams them through Tansu into the Spark stream job, the producer is SIGKILLed mid-minute and
restarted, the missed-stretch sensor's batch run fetches what it missed, and ``unified_view`` must then equal
the exchange's own daily candles.

Recorded days are in the past, while the speed layer serves today: each symbol's recording is shifted by whole
days so that three real days land on the day before yesterday (the batch layer's ingested history), yesterday
(fetched from the exchange by the batch layer: a closed day) and today up to a minute before the test began
(streamed, so after the seam). Today is where a partial minute can outrank the complete one.

Oracle: the exchange's recorded daily candles (``binance_spot_1d``) for the two whole days; for today, which the
exchange has only up to the end of the replay, the daily candle of its recorded minutes up to there, computed
in plain Python.
"""

from __future__ import annotations

import math
import signal
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, build_sensor_context, materialize

from crypto_assets.batch.backfill.missed_sensor import SENSOR_NAME
from crypto_assets.batch.partitions import RANGE_END_TAG, RANGE_START_TAG
from crypto_assets.batch_runs import materialize_batch_range
from crypto_assets.definitions import build_definitions
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.missed import read_stretches
from crypto_assets.serving.processes import free_port
from crypto_assets.serving.store import read_view
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import instance_at
from crypto_assets_tests.speed.harness import (
    TRACEBACK_MARKS,
    embedded_broker,
    kafka_ends,
    speed_view,
    start_command,
    start_stream,
    stop_group,
    stop_process,
    wait_caught_up,
)
from streaming_sensor.broker import topic_name
from streaming_sensor.producer import read_state

pytestmark = pytest.mark.slow

# Per symbol: the recording and the real day that becomes yesterday (the days either side are recorded whole).
REAL_DAYS = {"BTCUSDT": ("2023", date(2023, 9, 10)), "ETHUSDT": ("2023", date(2023, 10, 20))}
SYMBOLS = sorted(REAL_DAYS)
PREFIX = "seam"
TOPICS = [topic_name(PREFIX, "kline_1m"), topic_name(PREFIX, "trade")]
SPEED = 60.0  # one replayed minute a second
STREAMED = timedelta(minutes=40)  # exchange time the producer streams, ending where the recording ends
OUTAGE = timedelta(minutes=4)  # exchange time between the SIGKILL and the restart
MINUTE = timedelta(minutes=1)
STAMP = "%Y-%m-%d %H:%M:%S"


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def shifted_recording(shared_data: Path, symbol: str, today: date, end: datetime) -> pl.DataFrame:
    """Three real days of ``symbol`` moved by whole days to end on ``today``, cut at ``end``; values stay text
    as recorded, so the files written from it hold the exchange's exact numbers."""
    year, real = REAL_DAYS[symbol]
    shift = today - (real + timedelta(days=1))
    stamp = pl.col("timestamp").str.to_datetime(STAMP, time_zone="UTC")
    frame = pl.read_csv(shared_data / "binance_spot_1m" / year / f"{symbol}_1m.csv", infer_schema=False)
    frame = frame.filter(
        stamp.is_between(midnight(real - timedelta(days=1)), midnight(real + timedelta(days=2)), "left")
    )
    frame = frame.with_columns((stamp + shift).alias("at")).filter(pl.col("at") < end)
    assert frame.height == 2 * 1440 + (end - midnight(today)) // MINUTE, f"{symbol}: recorded days are not whole"
    return frame.with_columns(pl.col("at").dt.strftime(STAMP).alias("timestamp")).drop("at")


def write_csv(frame: pl.DataFrame, folder: Path, symbol: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{symbol}_1m.csv"
    frame.write_csv(path)
    return path


def recorded_daily(shared_data: Path, symbol: str, real: date) -> dict[str, float]:
    days = pl.read_csv(shared_data / "binance_spot_1d" / f"{symbol}_1d.csv", infer_schema=False)
    [row] = days.filter(pl.col("timestamp") == real.isoformat()).to_dicts()
    return {k: float(row[k]) for k in ("open", "high", "low", "close", "volume")}


def daily_of(minutes: pl.DataFrame) -> dict[str, float]:
    """A day's candle from its recorded minutes, the plain way: first open, highest high, lowest low, last close,
    total volume."""
    rows = sorted(minutes.iter_rows(named=True), key=lambda r: r["timestamp"])
    return {
        "open": float(rows[0]["open"]),
        "high": max(float(r["high"]) for r in rows),
        "low": min(float(r["low"]) for r in rows),
        "close": float(rows[-1]["close"]),
        "volume": math.fsum(float(r["volume"]) for r in rows),
    }


def wait_until(condition, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{log.read_text()[-4000:]}" if log else ""))
        time.sleep(0.005)


def plan() -> tuple[date, datetime, datetime]:
    """Today, the end of the replay (a minute before now) and the SIGKILL's exchange time: half-way through a
    minute of today, with room after it for the outage and the restarted producer. In the first minutes of a
    UTC day this waits until today has that room."""
    while True:
        now = datetime.now(UTC)
        end = now.replace(second=0, microsecond=0) - MINUTE
        kill_at = max(end - STREAMED + timedelta(minutes=15), midnight(now.date()) + 2 * MINUTE)
        room = kill_at + OUTAGE + 5 * MINUTE - end
        if room <= timedelta(0):
            return now.date(), end, kill_at + timedelta(seconds=30)
        time.sleep(room.total_seconds() + 1)


def config_text(rest_port: int, ws_port: int, bootstrap: str, start: date) -> str:
    symbols = "".join(f'[[symbols]]\nname = "{s}"\nstart = "{start}"\n\n' for s in SYMBOLS)
    return f"""
{symbols}
[exchange]
rest_url = "http://127.0.0.1:{rest_port}"
ws_url = "ws://127.0.0.1:{ws_port}"
backfill = true

[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{PREFIX}"
partitions = 3

[spark]
master = "local[2]"
shuffle_partitions = 2

[stream]
trigger_seconds = 1.0
watermark = "2 minutes"
"""


def test_after_a_producer_sigkill_mid_minute_and_the_missed_stretch_backfill_unified_view_equals_the_exchange(
    shared_data, project_home, tmp_path
):
    today, end, kill_at = plan()
    restart_at = kill_at + OUTAGE
    days = [today - timedelta(days=2), today - timedelta(days=1), today]
    exchange = {s: shifted_recording(shared_data, s, today, end) for s in SYMBOLS}
    exchange_dir, history_dir = tmp_path / "exchange", tmp_path / "history"
    history = [
        write_csv(
            frame.filter(pl.col("timestamp") < midnight(days[1]).strftime(STAMP)),
            history_dir,
            symbol,
        )
        for symbol, frame in exchange.items()
    ]
    market = Market.from_sources([str(write_csv(f, exchange_dir, s)) for s, f in exchange.items()], SYMBOLS)
    rest_port, ws_port = free_port(), free_port()

    with embedded_broker(topics=TOPICS, partitions=3) as broker, instance_at(tmp_path / "dagster") as instance:
        home = project_home(
            [str(p) for p in history], extra=config_text(rest_port, ws_port, broker.bootstrap_servers, days[0])
        )
        config = home / "crypto_assets.toml"
        settings = load_settings()
        stream_start = end - STREAMED

        # The batch layer as `up` leaves it: history ingested, yesterday and today so far from the exchange.
        with ReplayServer(market, port=rest_port, ws_port=ws_port, start=stream_start):
            first = materialize_batch_range(instance, settings)
        assert first.success

        stream_log, produce_log = tmp_path / "stream.log", tmp_path / "produce.log"
        stream = start_stream(config, stream_log, new_session=True)
        producers = []
        try:
            with ReplayServer(market, port=rest_port, ws_port=ws_port, start=stream_start, speed=SPEED) as replay:
                clock_ms = replay.clock.now_ms
                producers.append(start_command(config, produce_log, "produce", "--stats-seconds", "2"))
                # SIGKILL in the middle of a minute, once the producer has delivered both symbols' events.
                wait_until(
                    lambda: set(read_state(home / "speed").get("delivered_ms", {})) == set(SYMBOLS),
                    60,
                    "the producer's first deliveries",
                    produce_log,
                )
                wait_until(lambda: clock_ms() >= kill_at.timestamp() * 1000, 120, "the kill time")
                producers[0].send_signal(signal.SIGKILL)
                producers[0].wait()
                wait_until(lambda: clock_ms() >= restart_at.timestamp() * 1000, 60, "the restart time")
                producers.append(start_command(config, produce_log, "produce", "--stats-seconds", "2"))
                wait_until(lambda: clock_ms() >= (end + 2 * MINUTE).timestamp() * 1000, 120, "the recording's end")
                time.sleep(2.0)
                stop_process(producers[1])
            assert producers[1].returncode == 0, produce_log.read_text()[-3000:]
            ends = kafka_ends(broker.bootstrap_servers, TOPICS)
            wait_caught_up(stream, home / "speed" / "checkpoints" / "speed_candles", ends, 180, stream_log)
        finally:
            for producer in producers:
                stop_process(producer, signal.SIGKILL)
            stream_code = stop_group(stream) if stream.poll() is None else stream.returncode
        assert stream_code == 0, stream_log.read_text()[-3000:]

        crashed = [s for s in read_stretches(settings.speed_dir) if s.reason == "producer crashed"]
        assert sorted(s.symbol for s in crashed) == SYMBOLS and all(s.to_ms is not None for s in crashed), crashed
        # The stream holds a partial minute where the producer died: the case the batch layer must win.
        candles, _ = speed_view(home / "lake")
        partial = candles.filter(
            ~pl.col("is_closed") & (pl.col("open_time") < end - 3 * MINUTE) & (pl.col("open_time") >= midnight(today))
        )
        assert partial.height >= 1, "no minute was left unclosed by the SIGKILL"

        # The missed-stretch sensor asks for a batch refresh over the stretch's months; run it as the daemon would.
        with ReplayServer(market, port=rest_port, ws_port=ws_port, start=end + 2 * MINUTE):
            sensor = build_definitions(settings).resolve_sensor_def(SENSOR_NAME)
            tick = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=None))
            [request] = tick.run_requests
            refresh = materialize_batch_range(
                instance, settings, request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
            )
        assert refresh.success

        defs = build_definitions(load_settings())
        for symbol in SYMBOLS:
            result = materialize(
                list(defs.assets),
                selection=[AssetKey("unified_view")],
                partition_key=symbol,
                instance=instance,
                resources=defs.resources,
            )
            assert result.success
            failed = {e.check_name: e.description for e in result.get_asset_check_evaluations() if not e.passed}
            assert not failed, failed

    for symbol in SYMBOLS:
        real = REAL_DAYS[symbol][1]
        view = read_view(home / "lake", symbol)
        got = {row["date"]: row for row in view.filter(pl.col("date").is_in(days)).iter_rows(named=True)}
        assert sorted(got) == days, view
        today_minutes = exchange[symbol].filter(pl.col("timestamp") >= midnight(today).strftime(STAMP))
        expected = {
            days[0]: recorded_daily(shared_data, symbol, real - timedelta(days=1)),
            days[1]: recorded_daily(shared_data, symbol, real),
            days[2]: daily_of(today_minutes),
        }
        for day, candle in expected.items():
            row = got[day]
            assert not row["is_filled"], (symbol, day)
            for field in ("open", "high", "low", "close"):
                assert row[field] == candle[field], (symbol, day, field, row[field], candle[field])
            assert row["volume"] == pytest.approx(candle["volume"], rel=0, abs=1e-8), (symbol, day, row, candle)
        # Yesterday is a closed batch day; today lies after the seam, built from the streamed minutes.
        assert [got[d]["source"] for d in days] == ["batch", "batch", "speed"], symbol
    # The partial minutes were not the exchange's: had they stood, today's candle would differ.
    recorded = pl.concat(
        frame.select(
            pl.lit(symbol).alias("symbol"),
            pl.col("timestamp").str.to_datetime(STAMP, time_zone="UTC").dt.cast_time_unit("us").alias("open_time"),
            pl.col("volume").cast(pl.Float64).alias("recorded_volume"),
        )
        for symbol, frame in exchange.items()
    )
    compared = partial.join(recorded, on=["symbol", "open_time"])
    assert compared.height == partial.height and (compared["volume"] != compared["recorded_volume"]).any(), compared
    assert not any(mark in stream_log.read_text() for mark in TRACEBACK_MARKS)
