"""The forecast reports server behind the UI's chart links: serves <home>/reports on 127.0.0.1 and nothing else."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from crypto_assets.serving.processes import free_port
from crypto_assets.serving.reports import make_server


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.fixture
def served(tmp_path):
    reports = tmp_path / "home" / "reports"
    reports.mkdir(parents=True)
    (reports / "forecast_BTCUSDT.html").write_text("<html>report</html>")
    (tmp_path / "home" / "secret.toml").write_text("token = 'x'")
    port = free_port()
    server = make_server(reports, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, port
    server.shutdown()
    server.server_close()


def test_serves_a_report_on_loopback_only(served):
    server, port = served
    assert server.server_address[0] == "127.0.0.1"
    status, body = _get(f"http://127.0.0.1:{port}/forecast_BTCUSDT.html")
    assert (status, body) == (200, b"<html>report</html>")


def test_paths_outside_the_reports_directory_are_not_served(served):
    _, port = served
    for path in ("/../secret.toml", "/%2e%2e/secret.toml", "/missing.html"):
        status, body = _get(f"http://127.0.0.1:{port}{path}")
        assert status == 404 and b"token" not in body, path
