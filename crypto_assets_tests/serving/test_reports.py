"""The forecast reports server behind the UI's chart links: serves <home>/reports on 127.0.0.1 and nothing else."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from crypto_assets.serving.processes import free_port
from crypto_assets.serving.reports import make_server

pytestmark = pytest.mark.integration  # the reports server


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


def _raw(port: int, request_line: str) -> tuple[int, bytes]:
    """A request sent as written (urllib would normalise the path)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/"):  # an HTTP/0.9-style request line gets a bare error page
        return (400 if b"Error code: 400" in data else 0), data
    return int(data.split(b" ", 2)[1]), data


def test_no_directory_listing(served, tmp_path):
    _, port = served
    (tmp_path / "home" / "reports" / "sub").mkdir()
    (tmp_path / "home" / "reports" / "sub" / "inner.html").write_text("inner")
    for path in ("/", "/sub", "/sub/", "/./", "/?C=M;O=A"):
        status, body = _get(f"http://127.0.0.1:{port}{path}")
        assert status == 404 and b"forecast_BTCUSDT" not in body and b"inner" not in body, path
    assert _get(f"http://127.0.0.1:{port}/sub/inner.html") == (200, b"inner")


def test_symlinks_out_of_the_reports_folder_are_not_followed(served, tmp_path):
    _, port = served
    reports = tmp_path / "home" / "reports"
    (reports / "leak.html").symlink_to(tmp_path / "home" / "secret.toml")
    (reports / "home").symlink_to(tmp_path / "home", target_is_directory=True)
    (reports / "loop.html").symlink_to(reports / "loop.html")
    (reports / "alias.html").symlink_to(reports / "forecast_BTCUSDT.html")
    for path in ("/leak.html", "/home/secret.toml", "/loop.html"):
        status, body = _get(f"http://127.0.0.1:{port}{path}")
        assert status == 404 and b"token" not in body, path
    assert _get(f"http://127.0.0.1:{port}/alias.html") == (200, b"<html>report</html>")  # inside: fine


def test_odd_paths_get_a_plain_error_and_no_traceback(served, capfd):
    _, port = served
    odd = [
        "GET /%00 HTTP/1.1",
        "GET /forecast_BTCUSDT.html%00.txt HTTP/1.1",
        "GET /%ff%fe HTTP/1.1",
        "GET /..%2f..%2fsecret.toml HTTP/1.1",
        "GET /..%5csecret.toml HTTP/1.1",
        "GET //etc/passwd HTTP/1.1",
        "GET /forecast_BTCUSDT.html/ HTTP/1.1",
        "GET /" + "a" * 5000 + " HTTP/1.1",
        "GET * HTTP/1.1",
        "GET http://evil.example/secret.toml HTTP/1.1",
        "POST /forecast_BTCUSDT.html HTTP/1.1",
        "DELETE /forecast_BTCUSDT.html HTTP/1.1",
        "GET /~root HTTP/1.1",
        "GARBAGE",
    ]
    for line in odd:
        status, body = _raw(port, line)
        assert 400 <= status < 600 and b"token" not in body and b"Traceback" not in body, line
    assert _get(f"http://127.0.0.1:{port}/forecast_BTCUSDT.html")[0] == 200  # still serving
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
