"""The engine-independent arithmetic of the Polars transforms: daily volumes summed exactly, moving averages
added in one fixed order. (No Spark here; the Spark side is compared with these in the other modules.)"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from crypto_assets.batch.transforms.daily import aggregate_daily
from crypto_assets.batch.transforms.filled import add_moving_averages

START = datetime(2024, 1, 1, tzinfo=UTC)


def minutes_with_volumes(volumes: np.ndarray, days: int) -> pl.DataFrame:
    per_day = len(volumes) // days
    times = [START + timedelta(days=i // per_day, minutes=i % per_day) for i in range(len(volumes))]
    return pl.DataFrame(
        {"symbol": "X1", "open_time": times, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": volumes}
    )


def bits(values: pl.Series) -> np.ndarray:
    return values.to_numpy().view(np.int64)


def test_daily_volume_is_the_correctly_rounded_sum_whatever_the_row_order():
    rng = np.random.default_rng(11)
    days = 30
    # Busy and quiet minutes over many magnitudes, rounded to 8 decimals like exchange quantities.
    volumes = np.round(rng.lognormal(mean=2.0, sigma=3.0, size=days * 1440), 8)
    frame = minutes_with_volumes(volumes, days)
    results = [
        aggregate_daily(frame.sample(fraction=1.0, shuffle=True, seed=seed).lazy()).collect() for seed in range(4)
    ]
    for other in results[1:]:
        assert (bits(other["volume"]) == bits(results[0]["volume"])).all()
    exact = [math.fsum(volumes[d * 1440 : (d + 1) * 1440]) for d in range(days)]
    assert results[0]["volume"].to_list() == exact

    # What the exact sum is for: adding the same minutes in another order gives other last bits.
    naive = [frame.sample(fraction=1.0, shuffle=True, seed=seed)["volume"].to_numpy() for seed in range(4)]
    per_order = [[float(np.cumsum(v[d * 1440 : (d + 1) * 1440])[-1]) for d in range(days)] for v in naive]
    assert any(a != b for a, b in zip(per_order[0], per_order[1], strict=True))


def test_volumes_far_below_one_keep_their_precision():
    volumes = np.array([1e-8, 3e-9, 0.1, 0.2, 0.3, 1e-12] * 240)
    result = aggregate_daily(minutes_with_volumes(volumes, 1).lazy()).collect()
    assert result["volume"].item() == math.fsum(volumes)


def test_infinite_or_huge_volumes_fall_back_to_a_plain_sum_instead_of_failing():
    frame = minutes_with_volumes(np.array([1.0, math.inf, 2.0, 1e300, 3.0, 4.0]), 2)
    result = aggregate_daily(frame.lazy()).collect()
    assert result["volume"].to_list() == [math.inf, 1e300 + 7.0]


def test_moving_averages_add_the_window_oldest_first_then_scale_by_one_over_size():
    closes = np.random.default_rng(5).lognormal(mean=9.0, sigma=1.0, size=90)
    frame = pl.DataFrame(
        {"symbol": "X1", "date": [date(2024, 1, 1) + timedelta(days=i) for i in range(90)], "close": closes}
    )
    result = add_moving_averages(frame.lazy()).collect()
    for name, size in (("ma7", 7), ("ma30", 30)):
        expected: list[float | None] = [None] * (size - 1)
        for end in range(size, len(closes) + 1):
            total = closes[end - size]
            for value in closes[end - size + 1 : end]:
                total = total + value
            expected.append(float(total * (1.0 / size)))
        assert result[name].to_list() == expected, name
