"""Which version of a minute the unified view keeps after the seam: every combination of closed and unclosed
across the two layers, by hand and against a plain reference on generated micro-batch histories."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_assets.lake.microbatch_log import SPEED_CANDLE_SCHEMA
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets.serving.unified import AS_OF, BATCH, SPEED, running_days, running_minutes
from crypto_assets_tests.serving.helpers import minute_rows, utc

DELAY = timedelta(minutes=2)  # the stream job's default stream.watermark
MINUTE = utc(2024, 1, 2, 10, 0)
END = MINUTE + timedelta(minutes=1)
SPEED_PRICE, BATCH_PRICE = 100.0, 200.0


def speed_row(
    symbol: str, open_time: datetime, price: float, closed: bool, event_time: datetime, batch_id: int
) -> dict:
    row = minute_rows(symbol, open_time, 1, price).row(0, named=True)
    return {**row, "is_closed": closed, "event_time": event_time, "batch_id": batch_id}


def batch_row(symbol: str, open_time: datetime, price: float, as_of: datetime) -> dict:
    return {**minute_rows(symbol, open_time, 1, price).row(0, named=True), "as_of": as_of}


def speed_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SPEED_CANDLE_SCHEMA)


def batch_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={**MINUTE_SCHEMA, "as_of": AS_OF})


# The speed layer's newest version of MINUTE, as the stream left it; None: the stream never saw the minute.
SPEED_STATES = {
    "absent": None,
    "closed": dict(closed=True, event_time=END + timedelta(seconds=1)),
    # The stream's newest event is 30 s into the minute: its watermark is far behind, the final kline can come.
    "unclosed": dict(closed=False, event_time=MINUTE + timedelta(seconds=30)),
    # The producer died mid-minute and the stream went on to 10:05: its watermark (10:04) passed the minute.
    "unclosed, older than the watermark": dict(closed=False, event_time=MINUTE + timedelta(seconds=15)),
}
# The batch layer's MINUTE with the time minute_raw was written; None: the batch layer has no such minute.
BATCH_STATES = {"absent": None, "closed": END + timedelta(hours=1), "unclosed": MINUTE + timedelta(seconds=40)}

# Winner per (speed, batch): closed beats unclosed from either layer; among closed ones the stream's wins; a
# partial speed minute the stream can no longer finish gives way to any batch minute.
EXPECTED = {
    ("absent", "absent"): None,
    ("absent", "closed"): BATCH,
    ("absent", "unclosed"): BATCH,
    ("closed", "absent"): SPEED,
    ("closed", "closed"): SPEED,
    ("closed", "unclosed"): SPEED,
    ("unclosed", "absent"): SPEED,
    ("unclosed", "closed"): BATCH,
    ("unclosed", "unclosed"): SPEED,
    ("unclosed, older than the watermark", "absent"): SPEED,
    ("unclosed, older than the watermark", "closed"): BATCH,
    ("unclosed, older than the watermark", "unclosed"): BATCH,
}


def test_the_table_covers_every_combination():
    assert set(EXPECTED) == {(s, b) for s in SPEED_STATES for b in BATCH_STATES}


@pytest.mark.parametrize(("speed_state", "batch_state"), sorted(EXPECTED))
def test_precedence_of_one_minute(speed_state: str, batch_state: str):
    symbol = "BTCUSDT"
    speed, batch = [], []
    if SPEED_STATES[speed_state] is not None:
        speed.append(speed_row(symbol, MINUTE, SPEED_PRICE, batch_id=3, **SPEED_STATES[speed_state]))
        # An older micro-batch's version of the minute never counts, whatever it says.
        speed.append(speed_row(symbol, MINUTE, 1.0, closed=True, event_time=MINUTE + timedelta(seconds=5), batch_id=2))
    if speed_state == "unclosed, older than the watermark":
        speed.append(
            speed_row(
                symbol,
                MINUTE + timedelta(minutes=5),
                7.0,
                closed=False,
                event_time=MINUTE + timedelta(minutes=6),
                batch_id=4,
            )
        )
    if BATCH_STATES[batch_state] is not None:
        batch.append(batch_row(symbol, MINUTE, BATCH_PRICE, BATCH_STATES[batch_state]))

    minutes = running_minutes(speed_frame(speed).lazy(), batch_frame(batch).lazy(), date(2024, 1, 1), DELAY).collect()
    chosen = minutes.filter(pl.col("open_time") == MINUTE)

    winner = EXPECTED[(speed_state, batch_state)]
    if winner is None:
        assert chosen.height == 0
        return
    assert chosen.height == 1
    row = chosen.row(0, named=True)
    assert row["source"] == winner
    assert row["close"] == (SPEED_PRICE if winner == SPEED else BATCH_PRICE)
    assert row["as_of"] == (SPEED_STATES[speed_state]["event_time"] if winner == SPEED else BATCH_STATES[batch_state])


def test_a_stale_partial_minute_does_not_hold_the_day_after_the_seam():
    """A producer killed at 06:11:15 left 06:11 partial; the batch layer then fetched the whole minute."""
    symbol, day = "BTCUSDT", utc(2024, 1, 2)
    streamed = minute_rows(symbol, day + timedelta(hours=6), 20, 50.0, step=1.0)  # 06:00 .. 06:19
    partial = timedelta(hours=6, minutes=11)
    speed = speed_frame(
        [
            {
                **row,
                "volume": 0.98597 if row["open_time"] == day + partial else row["volume"],
                "is_closed": row["open_time"] != day + partial,
                "event_time": day + partial + timedelta(seconds=15)
                if row["open_time"] == day + partial
                else row["open_time"] + timedelta(minutes=1, milliseconds=5),
                "batch_id": 1,
            }
            for row in streamed.iter_rows(named=True)
        ]
    )
    fetched = batch_frame([batch_row(symbol, day + partial, 61.0, utc(2024, 1, 2, 6, 30)) | {"volume": 2.95791}])

    days = running_days(running_minutes(speed.lazy(), fetched.lazy(), date(2024, 1, 1), DELAY)).collect()

    assert days["volume"].item() == pytest.approx(19 + 2.95791)
    assert days["minute_count"].item() == 20 and days["source"].item() == SPEED


# ---- generated histories against a plain reference -------------------------------------------------------


def reference(speed: list[dict], batch: list[dict], delay: timedelta, seam: date | None) -> dict[tuple, tuple]:
    """(symbol, open_time) -> (source, close), the rules read literally."""
    watermark = {}
    for row in speed:
        watermark[row["symbol"]] = max(watermark.get(row["symbol"], row["event_time"]), row["event_time"])
    newest: dict[tuple, dict] = {}
    for row in speed:
        key = (row["symbol"], row["open_time"])
        if key not in newest or row["batch_id"] > newest[key]["batch_id"]:
            newest[key] = row
    batch_by_key = {(row["symbol"], row["open_time"]): row for row in batch}
    chosen = {}
    for key in newest.keys() | batch_by_key.keys():
        if seam is not None and key[1].date() <= seam:
            continue
        s, b = newest.get(key), batch_by_key.get(key)
        end = key[1] + timedelta(minutes=1)
        if s is None or b is None:
            pick = s or b
        elif s["is_closed"]:
            pick = s
        elif b["as_of"] >= end:  # closed batch minute beats an unclosed speed one
            pick = b
        elif end <= watermark[key[0]] - delay:  # the stream can no longer finish its partial minute
            pick = b
        else:
            pick = s
        chosen[key] = (SPEED if pick is s else BATCH, pick["close"])
    return chosen


BASE = utc(2024, 1, 1, 23, 57)  # minutes on both sides of midnight, so a seam on 2024-01-01 drops some


@st.composite
def histories(draw):
    speed, batch = [], []
    for symbol in draw(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT"]), min_size=1, max_size=2, unique=True)):
        for minute in range(draw(st.integers(1, 7))):
            open_time = BASE + timedelta(minutes=minute)
            batch_ids = draw(st.lists(st.integers(0, 9), max_size=3, unique=True))
            for batch_id in batch_ids:
                closed = draw(st.booleans())
                # An event of the minute (a final kline comes just after its end); far later ones move the watermark.
                seconds = draw(st.integers(0, 61) if closed else st.integers(0, 59))
                speed.append(
                    speed_row(
                        symbol,
                        open_time,
                        float(batch_id * 10 + minute),
                        closed,
                        open_time + timedelta(seconds=seconds),
                        batch_id,
                    )
                )
            if draw(st.booleans()):
                as_of = open_time + timedelta(seconds=draw(st.integers(1, 300)))
                batch.append(batch_row(symbol, open_time, 1000.0 + minute, as_of))
        if draw(st.booleans()):  # the stream went on well past these minutes
            later = BASE + timedelta(minutes=draw(st.integers(7, 12)))
            speed.append(speed_row(symbol, later, 5.0, True, later + timedelta(seconds=61), 10))
    return speed, batch


@settings(max_examples=300, deadline=None)
@given(
    histories(), st.sampled_from([None, date(2024, 1, 1)]), st.sampled_from([timedelta(0), DELAY, timedelta(minutes=5)])
)
def test_running_minutes_match_the_reference(history, seam, delay):
    speed, batch = history
    got = running_minutes(speed_frame(speed).lazy(), batch_frame(batch).lazy(), seam, delay).collect()
    assert got.select("symbol", "open_time").is_duplicated().sum() == 0
    assert {(r["symbol"], r["open_time"]): (r["source"], r["close"]) for r in got.iter_rows(named=True)} == reference(
        speed, batch, delay, seam
    )
