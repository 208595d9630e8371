"""Pure parts of the speed layer: candle folding, offsets, message parsing, missed stretches, batch writing."""

from __future__ import annotations

import json
import os
import random
import time
from datetime import UTC, date, datetime

import polars as pl
import pytest

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.lake.microbatch_log import batch_file, read_records
from crypto_assets.lake.missed import MissedLog, open_stretches, read_stretches
from crypto_assets.settings import parse_delay
from streaming_sensor.batch_writer import QUARANTINE_KEEP, BatchWriter, expire_quarantine, quarantine_path
from streaming_sensor.candles import DAY_MS, CandleBook
from streaming_sensor.producer import (
    Malformed,
    MessageParser,
    backoff_delay,
    stream_url,
)

T0 = int(datetime(2021, 3, 26, 23, 58, tzinfo=UTC).timestamp() * 1000)
M = 60_000


def kline(minute, o, h, lo, c, v, closed, event):
    return ("kline", minute, o, h, lo, c, v, closed, event)


def trade(minute_of, price, qty, when):
    return ("trade", minute_of, price, price, price, price, qty, False, when)


def fold(book, events, delay_ms=120_000):
    # The stream's order (streaming_sensor.folding.EVENT_ORDER): exchange time, and at the same millisecond a
    # trade before the kline update that already contains it.
    ordered = sorted(events, key=lambda e: (e[8], e[0] == "kline"))
    return book.apply(ordered, delay_ms)


def test_final_kline_is_the_candle_and_is_never_overwritten():
    book = CandleBook("BTCUSDT")
    fold(book, [kline(T0, 10, 11, 9, 10.5, 1.0, False, T0 + 2000), kline(T0, 10, 12, 8, 11, 5.0, True, T0 + M)])
    fold(book, [kline(T0, 10, 99, 1, 50, 100.0, False, T0 + 30_000), trade(T0, 500.0, 9.0, T0 + 59_000)])
    row = book.candles([T0]).row(0, named=True)
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"], row["is_closed"]) == (
        10,
        12,
        8,
        11,
        5.0,
        True,
    )


def test_trades_after_the_newest_kline_move_the_open_candle_and_the_next_kline_supersedes_them():
    book = CandleBook("BTCUSDT")
    fold(
        book,
        [
            kline(T0, 10, 10, 10, 10, 1.0, False, T0 + 2000),
            trade(T0, 10.0, 1.0, T0 + 2000),
            trade(T0, 13.0, 0.5, T0 + 3000),
        ],
    )
    row = book.candles([T0]).row(0, named=True)
    # the trade at the kline's own millisecond is already inside the kline; the later one is added
    assert (row["high"], row["close"], row["volume"]) == (13.0, 13.0, 1.5)
    fold(book, [kline(T0, 10, 13, 10, 13, 1.5, False, T0 + 4000)])
    row = book.candles([T0]).row(0, named=True)
    assert (row["high"], row["close"], row["volume"]) == (13.0, 13.0, 1.5)
    # an older kline update arriving late does not move the candle back
    fold(book, [kline(T0, 10, 10, 10, 10, 1.0, False, T0 + 2500)])
    assert book.candles([T0]).row(0, named=True)["volume"] == 1.5


def test_first_trade_opens_a_candle_before_any_kline():
    book = CandleBook("BTCUSDT")
    touched, _ = fold(book, [trade(T0, 7.0, 2.0, T0 + 10), trade(T0, 6.0, 1.0, T0 + 20)])
    assert touched == {T0}
    row = book.candles([T0]).row(0, named=True)
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"], row["is_closed"]) == (
        7,
        7,
        6,
        6,
        3.0,
        False,
    )


def test_events_older_than_the_watermark_are_dropped_per_symbol():
    book = CandleBook("BTCUSDT")
    fold(book, [kline(T0 + 10 * M, 1, 1, 1, 1, 1, True, T0 + 11 * M)], delay_ms=2 * M)
    touched, late = fold(
        book,
        [kline(T0, 1, 1, 1, 1, 1, True, T0 + M), kline(T0 + 9 * M, 1, 1, 1, 1, 1, True, T0 + 10 * M)],
        delay_ms=2 * M,
    )
    assert late == 1 and touched == {T0 + 9 * M}


def test_daily_rows_reuse_the_batch_aggregation_and_span_midnight_correctly():
    book = CandleBook("BTCUSDT")
    rng = random.Random(1)
    events = []
    for i in range(4):  # 23:58, 23:59, 00:00, 00:01
        o = 100 + i
        events.append(
            kline(T0 + i * M, o, o + rng.random(), o - rng.random(), o + 0.5, 1.0 + i, True, T0 + (i + 1) * M)
        )
    touched, _ = fold(book, events)
    daily = book.daily(touched)
    expected = aggregate_daily(book.candles(book.minutes).lazy()).collect()
    assert daily.drop("event_ms").equals(expected)
    assert daily["date"].to_list() == [date(2021, 3, 26), date(2021, 3, 27)]
    assert daily["minute_count"].to_list() == [2, 2]


def test_days_leave_the_state_once_the_watermark_passes_and_their_events_are_late():
    book = CandleBook("BTCUSDT")
    fold(book, [kline(T0, 1, 1, 1, 1, 1, True, T0 + M)])
    next_day = T0 + 2 * M + DAY_MS // 2
    fold(book, [kline(next_day, 2, 2, 2, 2, 1, False, next_day + 1000)])
    book.evict(2 * M)
    assert T0 not in book.minutes and next_day in book.minutes
    _, late = fold(book, [kline(T0, 1, 1, 1, 1, 1, True, next_day)])  # new event time, evicted day
    assert late == 1


def test_state_round_trip():
    book = CandleBook("BTCUSDT")
    fold(book, [kline(T0, 1.5, 2, 1, 1.75, 3.25, False, T0 + 2000), trade(T0, 1.8, 0.1, T0 + 3000)])
    again = CandleBook.from_state("BTCUSDT", book.to_state())
    assert again == book


def test_parse_delay():
    assert parse_delay("2 minutes") == 120_000
    assert parse_delay("30 seconds") == 30_000
    with pytest.raises(ValueError, match="stream.watermark"):
        parse_delay("soon")


def test_parse_message_accepts_binance_payloads_and_names_what_is_wrong():
    parser = MessageParser("crypto", {"BTCUSDT"})
    data = {"e": "kline", "E": 5, "s": "BTCUSDT", "k": {"t": 0, "x": False}}
    out = parser.parse(json.dumps({"stream": "btcusdt@kline_1m", "data": data}), 9)
    assert out.topic == "crypto.kline_1m" and out.key == b"BTCUSDT" and json.loads(out.value) == data
    assert (out.symbol, out.event_ms, out.received_ms) == ("BTCUSDT", 5, 9)
    assert parser.parse('{"e":"serverShutdown","E":1}', 9) == "serverShutdown"
    for raw, needle in [
        ('{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":', "not JSON"),
        (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTC\xffUSDT"}}', "not JSON"),
        ('{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT"}}', "not subscribed"),
        ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":["BTCUSDT"]}}', "not subscribed"),
        ('{"stream":"btcusdt@trade","data":{"e":"kline","E":1,"s":"BTCUSDT"}}', "event type"),
        ('{"stream":"btcusdt@trade","data":{"e":"trade","E":"x","s":"BTCUSDT"}}', "event time"),
        ('{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":[]}}', "kline without 'k'"),
    ]:
        with pytest.raises(Malformed, match=needle):
            parser.parse(raw, 9)


def test_a_usual_frame_publishes_the_exchanges_own_data_bytes_and_any_other_shape_is_parsed_whole():
    parser = MessageParser("crypto", {"BTCUSDT"})
    data = '{"e":"trade","E":7,"s":"BTCUSDT","p":"1.50","q":"2","f":1.10,"m":true}'  # 1.10: re-serialized, 1.1
    assert parser.parse(f'{{"stream":"btcusdt@trade","data":{data}}}'.encode(), 9).value == data.encode()
    expected = json.dumps(json.loads(data), separators=(",", ":")).encode()
    assert expected != data.encode()
    for raw in [
        f'{{"stream": "btcusdt@trade", "data": {data}}}',  # spaced
        f'{{"data":{data},"stream":"btcusdt@trade"}}',  # other key order
        f'{{"stream":"btcusdt@trade","data":{{"e":"kline"}},"data":{data}}}',  # the last duplicate wins
        f'{{"stream":"btcusdt@trade","data":{data},"x":1}}',  # one more key
    ]:
        out = parser.parse(raw, 9)
        assert (out.topic, out.value, out.event_ms) == ("crypto.trade", expected, 7), raw
    with pytest.raises(Malformed, match="not JSON"):
        parser.parse(f'{{"stream":"btcusdt@trade","data":{data} x}}', 9)  # garbage after data
    with pytest.raises(Malformed, match="event type"):  # the first of two "data" is not what is checked
        parser.parse(f'{{"stream":"btcusdt@trade","data":{data},"data":{{"e":"kline","E":1,"s":"BTCUSDT"}}}}', 9)


def test_stream_url_and_backoff():
    assert stream_url("ws://h:1/", ["BTCUSDT"]) == "ws://h:1/stream?streams=btcusdt@kline_1m/btcusdt@trade"
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 30.0, rng) for a in range(12)]
    assert all(0 <= d <= min(30.0, 0.5 * 2**a) for a, d in enumerate(delays))


def test_missed_stretches_are_durable_and_keep_the_last_state(tmp_path):
    log = MissedLog(tmp_path)
    opened = log.open("BTCUSDT", 1000, "connection closed")
    log.open("ETHUSDT", 2000, "producer stopped")
    log.close(opened, 5000)
    with log.path.open("ab") as handle:
        handle.write(b'{"id":"torn')  # a crash mid-line is not a record
    stretches = read_stretches(tmp_path)
    assert [(s.symbol, s.from_ms, s.to_ms) for s in stretches] == [("BTCUSDT", 1000, 5000), ("ETHUSDT", 2000, None)]
    assert list(open_stretches(tmp_path)) == ["ETHUSDT"]


def _rows(batch: int) -> pl.DataFrame:
    when = datetime(2021, 3, 26, 3, batch, tzinfo=UTC)
    return pl.DataFrame(
        {
            "kind": ["candle", "daily", "bad"],
            "symbol": ["BTCUSDT", "BTCUSDT", None],
            "open_time": [when, None, None],
            "date": [None, when.date(), None],
            "open": [1.0, 1.0, None],
            "high": [2.0, 2.0, None],
            "low": [0.5, 0.5, None],
            "close": [1.5, 1.5, None],
            "volume": [3.0, 3.0, None],
            "is_closed": [True, None, None],
            "minute_count": [None, 1, None],
            "event_time": [when, when, None],
            "dropped": [None, None, None],
            "topic": [None, None, "crypto.trade"],
            "partition": [None, None, 0],
            "offset": [None, None, 7],
            "reason": [None, None, "value: not a JSON stream message"],
        }
    )


def test_a_replayed_batch_rewrites_identical_files_and_logs_once(tmp_path):
    lake, speed = tmp_path / "lake", tmp_path / "speed"
    writer = BatchWriter(lake, speed)
    offsets = {"crypto.trade": {"0": [0, 8]}}
    first = writer.write(_rows(0), 0, offsets)
    writer.write(_rows(1), 1, offsets)
    before = batch_file(lake, "candles_1m", 1).read_bytes()
    restarted = BatchWriter(lake, speed)  # a new process after a crash replays batch 1
    restarted.write(_rows(1), 1, offsets)
    assert batch_file(lake, "candles_1m", 1).read_bytes() == before
    records = read_records(lake)
    assert [r.batch_id for r in records] == [0, 1]
    assert sum(1 for p in (lake / "speed" / "_log").glob("*.jsonl") for _ in p.open()) == 2
    assert first.rows == {"candles_1m": 1, "daily": 1} and first.offsets == offsets
    quarantined = (speed / "quarantine" / "batch=000000000000.jsonl").read_text()
    assert "not a JSON stream message" in quarantined and '"offset": 7' in quarantined
    assert pl.read_parquet(batch_file(lake, "daily", 0))["minute_count"].dtype == pl.UInt32


def test_quarantine_files_older_than_a_week_or_beyond_the_newest_go_when_a_new_one_is_written(tmp_path):
    lake, speed = tmp_path / "lake", tmp_path / "speed"
    writer = BatchWriter(lake, speed)
    offsets = {"crypto.trade": {"0": [0, 8]}}
    for batch_id in range(3):
        writer.write(_rows(batch_id), batch_id, offsets)
    old = time.time() - QUARANTINE_KEEP.total_seconds() - 60
    for batch_id in (0, 1):
        os.utime(quarantine_path(speed, batch_id), (old, old))
    assert len(list((speed / "quarantine").iterdir())) == 3  # nothing goes until a new one is written
    writer.write(_rows(3), 3, offsets)
    assert sorted((speed / "quarantine").iterdir()) == [quarantine_path(speed, 2), quarantine_path(speed, 3)]
    assert "not a JSON stream message" in quarantine_path(speed, 3).read_text()

    for batch_id in range(4, 8):
        writer.write(_rows(batch_id), batch_id, offsets)
    removed = expire_quarantine(speed, time.time(), max_files=2)
    assert removed == [quarantine_path(speed, b) for b in range(2, 6)]
    assert sorted((speed / "quarantine").iterdir()) == [quarantine_path(speed, 6), quarantine_path(speed, 7)]
