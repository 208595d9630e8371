"""The quick tier (crypto_assets_tests/tiers.py): it leaves out slow and integration tests, and a unit test that
starts a process, a multiprocessing worker or a server fails, even when the code under test swallows the error."""

from __future__ import annotations

import sys

import pytest

INNER_TESTS = """
import multiprocessing
import socket
import subprocess

import pytest


def test_light(tmp_path):
    (tmp_path / "x").write_text("x")


def test_process():
    subprocess.run(["true"])


def test_swallowed_process():
    try:
        subprocess.run(["true"])
    except Exception:
        pass


def test_worker():
    multiprocessing.get_context("spawn").Process(target=print).start()


def test_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # binding alone (finding a free port) is allowed
        sock.listen()


@pytest.mark.integration
def test_marked_integration():
    subprocess.run(["true"])


@pytest.mark.slow
def test_marked_slow():
    subprocess.run(["true"])
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    integration: integration\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def test_the_quick_tier_leaves_out_heavy_tests_and_fails_unit_tests_that_start_processes_or_servers(inner):
    result = inner.runpytest_inprocess("-p", "crypto_assets_tests.tiers", "--quick")
    result.assert_outcomes(passed=1, failed=4, deselected=2)
    for name in ("test_process", "test_swallowed_process", "test_worker", "test_server"):
        result.stdout.fnmatch_lines([f"*test_inner.py::{name} started * in the quick (unit) tier*"])


def test_without_quick_every_test_is_selected(inner):
    inner.runpytest_inprocess("-p", "crypto_assets_tests.tiers", "--collect-only", "-q").stdout.fnmatch_lines(
        ["7 tests collected*"]
    )
    quick = inner.runpytest_inprocess("-p", "crypto_assets_tests.tiers", "--collect-only", "-q", "--quick")
    quick.stdout.fnmatch_lines(["5/7 tests collected (2 deselected)*"])


def test_dagsters_log_mirror_and_the_font_listing_are_allowed_and_other_commands_are_not():
    from crypto_assets_tests.tiers import DAGSTER_PACKAGE, is_light_helper

    watcher = str(DAGSTER_PACKAGE / "_core" / "execution" / "scripts" / "watch_orphans.py")
    assert is_light_helper("subprocess.Popen", (None, ["tail", "-F", "-c", "+0", "/tmp/x.out"], None, None))
    assert is_light_helper("subprocess.Popen", (None, [sys.executable, watcher, "1", "2"], None, None))
    assert is_light_helper("subprocess.Popen", (None, ["fc-list", "--format=%{file}\\n"], None, None))
    assert not is_light_helper("subprocess.Popen", (None, [sys.executable, "-m", "dagster", "api", "grpc"], None, None))
    assert not is_light_helper("subprocess.Popen", (None, ["java", "-version"], None, None))
    assert not is_light_helper("subprocess.Popen", (None, "tansu", None, None))
    assert not is_light_helper("os.fork", ())
