"""Out-of-sample acceptance backtest on the real daily closes: model selection and calibration on the data up
to 2023-12-31, then the frozen choice scored at weekly origins across 2024 at 1, 7 and 30 days.

Every fold refits every model (Prophet included) on its own expanding window: 53 selection origins and 49 test
origins per symbol, ~200 folds in all on a 2-worker pool (a few minutes).
"""

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from crypto_assets.forecast.cross_validation import make_executor
from crypto_assets.forecast.csv_input import read_daily_csv
from crypto_assets.forecast.options import DEFAULT_OPTIONS
from crypto_assets_tests.forecast.backtest import backtest

pytestmark = pytest.mark.integration  # Prophet's Stan fits and the cross-validation process pool

TRAIN_END = date(2023, 12, 31)


@pytest.fixture(scope="module")
def results(shared_data: Path) -> dict[str, pl.DataFrame]:
    out = {}
    with make_executor(DEFAULT_OPTIONS) as pool:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            history = read_daily_csv(shared_data / "binance_spot_1d" / f"{symbol}_1d.csv").filter(
                pl.col("ds") <= date(2024, 12, 31)
            )
            out[symbol] = backtest(history, TRAIN_END, DEFAULT_OPTIONS, executor=pool)
    return out


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_served_forecast_out_of_sample_2024(results, symbol: str) -> None:
    bt = results[symbol]
    summary = {r["horizon"]: r for r in bt.summary.iter_rows(named=True)}
    print(symbol, bt.summary)
    assert sorted(summary) == [1, 7, 30]
    # Test origins: weekly from 2023-12-31 while the 30-day target is still in 2024.
    cutoffs = bt.test["cutoff"].unique().sort()
    assert cutoffs.min() == TRAIN_END and cutoffs.max() <= date(2024, 12, 1) and cutoffs.len() >= 48
    assert (cutoffs.diff().drop_nulls().dt.total_days() == 7).all()
    # Selection saw nothing after 2023-12-31: its folds' targets all end by then.
    assert bt.selection["n"].max() == 53
    for h, row in summary.items():
        assert row["skill"] >= -0.02, (h, row)  # the served forecast is never materially worse than naive
        assert row["skill_lo"] <= row["skill"] <= row["skill_hi"]
    assert summary[1]["prophet_mape"] <= 1.5 * summary[1]["naive_mape"]
    # 80% intervals over all 2024 outcomes (three horizons pooled; ~49 origins each)
    pooled = sum(r["coverage_80"] * r["origins"] for r in summary.values()) / sum(
        r["origins"] for r in summary.values()
    )
    assert 0.72 <= pooled <= 0.88, bt.summary
