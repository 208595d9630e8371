"""`dg` (dagster-dg-cli) on the project, run as a user runs it from the repository root: `dg check defs` loads the
code location named in pyproject.toml's ``[tool.dg]``, and `dg list defs` shows every asset, check, job, schedule
and sensor that ``build_definitions`` makes from the same settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_assets.definitions import build_definitions
from crypto_assets.settings import load_settings
from crypto_assets_tests.conftest import REPO
from crypto_assets_tests.test_defs import snapshot

pytestmark = pytest.mark.integration  # the dg command in a subprocess

# The dg installed beside this interpreter (the test extra brings it into .venv).
DG = Path(sys.executable).with_name("dg")


def run_dg(*args: str, dagster_home: Path) -> subprocess.CompletedProcess:
    dagster_home.mkdir(parents=True, exist_ok=True)
    # As with the venv activated (dg warns when the active venv is not the project's); a Dagster instance of the
    # test's own, never the developer's DAGSTER_HOME.
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "DAGSTER_HOME": str(dagster_home)}
    return subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_dg_check_defs_loads_the_code_location(project_home, tmp_path):
    project_home()
    completed = run_dg("check", "defs", dagster_home=tmp_path / "dagster")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "All definitions loaded successfully" in completed.stdout


def test_dg_list_defs_shows_every_definition(project_home, tmp_path):
    project_home()
    completed = run_dg("list", "defs", "--json", dagster_home=tmp_path / "dagster")
    assert completed.returncode == 0, completed.stderr[-3000:]
    listed = json.loads(completed.stdout)

    expected = snapshot(build_definitions(load_settings()))
    assert expected["assets"] and expected["checks"] and expected["sensors"]
    assert {asset["asset_key"] for asset in listed["assets"]} == set(expected["assets"])
    assert {f"{check['asset_key']}.{check['name']}" for check in listed["asset_checks"]} == set(expected["checks"])
    assert {job["name"] for job in listed["jobs"]} == set(expected["jobs"])
    assert {schedule["name"] for schedule in listed["schedules"]} == set(expected["schedules"])
    assert {sensor["name"] for sensor in listed["sensors"]} == set(expected["sensors"])
