from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.forecast.csv_input import read_daily_csv
from crypto_assets.forecast.history import validate_history
from crypto_assets.forecast.results import write_csv
from crypto_assets.lake.atomic import atomic_target

from .conftest import make_history


def test_validate_history_rejects_contract_breaks() -> None:
    ok = make_history(np.arange(1.0, 11.0))
    validate_history(ok, require_positive=True)
    with pytest.raises(ValueError, match="continuous"):
        validate_history(ok.filter(pl.col("ds") != date(2020, 1, 5)))
    with pytest.raises(ValueError, match="continuous"):
        validate_history(ok.reverse())
    with pytest.raises(ValueError, match="one symbol"):
        validate_history(pl.concat([ok, make_history(np.ones(10), symbol="OTHER")]))
    with pytest.raises(ValueError, match="y > 0"):
        validate_history(make_history(np.array([1.0, 0.0, 2.0])), require_positive=True)
    with pytest.raises(ValueError, match="missing"):
        validate_history(ok.drop("symbol"))


def test_read_daily_csv_fills_gaps(tmp_path: Path) -> None:
    path = tmp_path / "XYZUSDT_1d.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2021-01-01,1,1,1,10.0,5\n"
        "2021-01-02,1,1,1,11.0,5\n"
        "2021-01-04,1,1,1,13.0,5\n"
    )
    df = read_daily_csv(path)
    validate_history(df)
    assert df["symbol"].unique().to_list() == ["XYZUSDT"]
    assert df["y"].to_list() == [10.0, 11.0, 11.0, 13.0]


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "results.csv"
    write_csv(pl.DataFrame({"a": [1]}), target)
    old = target.read_text()

    with pytest.raises(RuntimeError), atomic_target(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
