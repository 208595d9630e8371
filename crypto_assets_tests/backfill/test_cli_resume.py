"""``crypto-assets backfill`` as a user runs it: killed with SIGKILL midway against a slow exchange, then run
again, it resumes from the gaps that remain, with no duplicate and no missing minute."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from crypto_assets.batch.backfill.store import EXCHANGE_EMPTY
from crypto_assets.cli import main
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets_tests.backfill.conftest import (
    OUTAGE_MINUTES,
    SYMBOL,
    april,
    digest,
    punch_hole,
    recording,
)
from crypto_assets_tests.conftest import REPO

SYMBOLS = f'[[symbols]]\nname = "{SYMBOL}"\nstart = "2021-03-26"\n'
COMMAND = ["backfill", "--from", "2021-04-16", "--to", "2021-04-26"]


@pytest.mark.integration  # a replay exchange server and the command in a subprocess
def test_a_killed_backfill_resumes_without_duplicates_or_missing_minutes(
    recorded_market, original_lake, project_home, shared_data, capsys
):
    with ReplayServer(recorded_market) as replay:
        # The lake holds the recording, so it is the configured source (else the synthetic market's span rules).
        home = project_home(
            [str(recording(shared_data))], extra=SYMBOLS + f'[exchange]\nrest_url = "{replay.rest_url}"\n'
        )
        lake = home / "lake"
        shutil.copytree(original_lake, lake)
        deleted = punch_hole(lake)
        holed_rows = pl.read_parquet(april(lake)).height

        replay.inject(rest_delay_ms=150)  # every answer waits: the run takes seconds, long enough to kill
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "crypto_assets.cli", *COMMAND, "--chunk-minutes", "1440"]
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        committed = []
        deadline = time.monotonic() + 120
        try:
            for line in process.stdout:
                if line.startswith("committed"):
                    committed.append(line)
                if len(committed) == 2 or time.monotonic() > deadline:
                    break
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=30)
            process.stdout.close()
        assert len(committed) == 2 and process.returncode == -signal.SIGKILL

        partial = pl.read_parquet(april(lake))
        added_before_kill = partial.height - holed_rows
        assert 2 * 1440 <= added_before_kill < deleted, "the kill must land midway, after committed chunks"
        assert partial["open_time"].is_unique().all()

        replay.clear_faults()
        capsys.readouterr()
        assert main(COMMAND) == 0
        added = re.search(r"^added ([\d,]+) minutes", capsys.readouterr().out, re.MULTILINE)
        assert int(added.group(1).replace(",", "")) == deleted - added_before_kill

    restored = pl.read_parquet(april(lake))
    assert restored["open_time"].is_unique().all()
    assert restored.equals(pl.read_parquet(april(original_lake)))
    assert digest(april(lake)) == digest(april(original_lake))
    outages = pl.read_parquet(april(lake, EXCHANGE_EMPTY))
    assert outages["minutes"].sum() == OUTAGE_MINUTES  # the real outages are known, not missing by mistake


def test_the_command_names_what_is_wrong_with_its_input(project_home, capsys):
    project_home(extra=SYMBOLS + '[exchange]\nrest_url = "http://127.0.0.1:9"\n')
    assert main(["backfill", "--from", "2021-04-16", "--to", "2021-04-16"]) == 2
    assert "--to (2021-04-16) must be after --from" in capsys.readouterr().err
    assert main([*COMMAND, "--symbol", "ETHUSDT"]) == 2
    assert "symbol 'ETHUSDT' is not configured" in capsys.readouterr().err
    assert main([*COMMAND, "--symbol", "../etc"]) == 2
    assert "invalid symbol '../etc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backfill", "--from", "2021-13-01", "--to", "2021-04-16"])
    assert "expected a date like 2021-03-01, got '2021-13-01'" in capsys.readouterr().err


def test_the_command_refuses_when_the_backfill_is_off(project_home, capsys):
    project_home(extra=SYMBOLS)  # test homes keep exchange.backfill = false
    assert main(COMMAND) == 2
    assert "exchange.backfill = false" in capsys.readouterr().err


def test_an_unreachable_exchange_is_an_error_that_says_how_to_resume(
    project_home, original_lake, shared_data, capsys, quick_retries
):
    home = project_home(
        [str(recording(shared_data))],
        extra=SYMBOLS + '[exchange]\nrest_url = "http://127.0.0.1:9"\ntimeout_seconds = 1.0\n',
    )
    shutil.copytree(original_lake, home / "lake")
    punch_hole(home / "lake")
    assert main(COMMAND) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9" in err and "run the same command again to resume" in err
