"""``crypto-assets reports``: the forecast reports (``<home>/reports/*.html``) over HTTP on 127.0.0.1, so the
links in the Dagster UI's materialization metadata open in the browser (a ``file://`` link from an
``http://`` page does not)."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from crypto_assets.settings import Settings


def reports_dir(home: Path) -> Path:
    return home / "reports"


def report_url(settings: Settings, file_name: str) -> str:
    return f"http://127.0.0.1:{settings.serving.reports_port}/{file_name}"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files of one directory (the stdlib handler refuses paths outside it); no request log spam."""

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def make_server(directory: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    directory.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return ThreadingHTTPServer((host, port), handler)
