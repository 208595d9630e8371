"""``crypto-assets forecast``: rows per model and day ahead, and --as-of uses nothing after that day."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crypto_assets.cli import main
from crypto_assets.forecast.commands import COLUMNS

from .conftest import make_history


def write_csv(path: Path, history: pl.DataFrame) -> Path:
    history.select(
        pl.col("ds").dt.strftime("%Y-%m-%d").alias("timestamp"),
        *[pl.col("y").alias(c) for c in ("open", "high", "low", "close")],
        pl.lit(1.0).alias("volume"),
    ).write_csv(path)
    return path


@pytest.mark.integration  # Prophet's Stan fits
def test_forecast_command_as_of_sees_no_later_day(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(5)
    history = make_history(np.exp(8 + np.cumsum(rng.normal(0, 0.02, 340))), symbol="XYZUSDT")
    as_of = history["ds"][319]
    full = write_csv(tmp_path / "XYZUSDT_1d.csv", history)
    # The same file with wild prices after --as-of: a look-ahead would change the output.
    poisoned = write_csv(
        tmp_path / "poisoned.csv",
        history.with_columns(pl.when(pl.col("ds") > as_of).then(pl.col("y") * 50).otherwise("y").alias("y")),
    )

    assert (
        main(["forecast", "--symbol", "XYZUSDT", "--input", str(full), "--as-of", str(as_of), "--format", "csv"]) == 0
    )
    out, err = capsys.readouterr()
    assert (
        main(["forecast", "--symbol", "XYZUSDT", "--input", str(poisoned), "--as-of", str(as_of), "--format", "csv"])
        == 0
    )
    assert capsys.readouterr().out == out

    rows = pl.read_csv(io.StringIO(out), try_parse_dates=True)
    assert tuple(rows.columns) == COLUMNS
    assert set(rows["model"]) == {"prophet", "naive", "drift", "auto_ets"}
    assert rows.height == 4 * 30 and rows["ds"].min() == as_of + (rows["ds"].min() - as_of) and rows["ds"].min() > as_of
    served = rows.filter(pl.col("served"))
    assert served.height == 30 and served["ds"].n_unique() == 30  # one served model per day ahead
    assert (served["lower_95"] <= served["lower_80"]).all() and (served["upper_80"] <= served["upper_95"]).all()
    assert "short history" in err  # 320 days: fewer origins than a year's, and it says so

    assert main(["forecast", "--symbol", "XYZUSDT", "--input", str(full), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 120


def test_forecast_command_too_short_history(tmp_path: Path, capsys) -> None:
    path = write_csv(tmp_path / "XYZUSDT_1d.csv", make_history(np.linspace(100, 120, 200), symbol="XYZUSDT"))
    assert main(["forecast", "--symbol", "XYZUSDT", "--input", str(path)]) == 1
    assert "too few" in capsys.readouterr().err
