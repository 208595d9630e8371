"""The command line with an ``s3://`` lake: ingest lands the files locally and merges them into the bucket,
and ``sql``, ``storage`` and ``status`` read the bucket; the stream, which appends in place, refuses it."""

from __future__ import annotations

import polars as pl
import pytest

from crypto_assets.cli import main
from crypto_assets.validation import SettingsError


def test_ingest_and_the_readers_work_on_an_s3_lake(tmp_path, project_home, s3_lake, capsys):
    home = project_home()
    assert main(["generate", "--scale", "tiny", "--out", str(tmp_path / "csv")]) == 0
    assert main(["ingest", str(tmp_path / "csv")]) == 0
    ingested = capsys.readouterr().out
    rows = int(ingested.split("minute_raw: ")[1].split(" rows")[0].replace(",", ""))
    assert rows > 10_000 and (home / "landing").is_dir() and not (home / "lake").exists()

    stored = pl.scan_parquet(f"{s3_lake}/minute_raw/**/*.parquet").select(pl.len()).collect().item()
    assert stored == rows
    assert main(["sql", "select count(*) as n from minute_raw"]) == 0
    assert f"{rows}" in capsys.readouterr().out
    assert main(["storage"]) == 0
    assert "minute_raw" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "BTCUSDT: minute_raw up to" in capsys.readouterr().out

    assert main(["ingest", str(tmp_path / "csv")]) == 0  # the same files again change nothing
    capsys.readouterr()
    assert pl.scan_parquet(f"{s3_lake}/minute_raw/**/*.parquet").select(pl.len()).collect().item() == rows


def test_the_stream_refuses_an_s3_lake_naming_why(project_home, s3_lake):
    from crypto_assets.settings import load_settings
    from streaming_sensor.stream_job import start_stream

    project_home()
    with pytest.raises(SettingsError, match="the stream job needs a local .* lake; lake is s3://"):
        start_stream(None, load_settings())
