"""``crypto-assets reports``: the forecast reports (``<home>/reports/*.html``) over HTTP on 127.0.0.1, so the
links in the Dagster UI's materialization metadata open in the browser (a ``file://`` link from an
``http://`` page does not).

It serves regular files inside the reports folder and nothing else: no directory listing, no symlink that
leads out of the folder, no dotfile (a name starting with '.', e.g. ``.env`` or ``.git/``, asked for or reached
through a symlink), and a plain 4xx (never a traceback) for any odd path.
"""

from __future__ import annotations

import mimetypes
import shutil
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def resolve_report(root: Path, request_path: str) -> Path | None:
    """The regular file inside ``root`` that ``request_path`` names, after every symlink; None for anything else."""
    try:
        name = unquote(urlsplit(request_path).path, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    if "\0" in name or "\\" in name or not name.startswith("/") or name.endswith("/"):
        return None
    parts = [p for p in name.split("/") if p]
    if not parts or any(p.startswith(".") for p in parts):  # ".", ".." and every dotfile
        return None
    try:
        base = root.resolve(strict=True)
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    if any(p.startswith(".") for p in target.relative_to(base).parts):
        return None
    return target


class ReportHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the files in ``root``; everything else is a short error page."""

    root: Path = Path(".")
    server_version = "crypto-assets-reports"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        target = resolve_report(self.root, self.path)
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "No such report")
            return
        try:
            handle = target.open("rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "No such report")
            return
        with handle:
            size = target.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", mimetypes.guess_type(target.name)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if body:
                shutil.copyfileobj(handle, self.wfile)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


class ReportServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is not worth a traceback on the console."""
        print(f"reports: request from {client_address[0]} failed: {sys.exc_info()[1]!r}", file=sys.stderr)


def make_server(directory: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    directory.mkdir(parents=True, exist_ok=True)
    handler = type("BoundReportHandler", (ReportHandler,), {"root": directory})
    return ReportServer((host, port), handler)
