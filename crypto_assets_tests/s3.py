"""A throwaway S3-compatible server for tests: moto's standalone server (``moto[server]``) on a free port of
127.0.0.1, with the standard AWS variables pointing every client (s3fs, Polars, the Dagster run processes) at
it. moto keeps its objects in the server's memory; stopping it removes them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

BUCKET = "crypto-lake"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def s3_server() -> Iterator[str]:
    """Yields the endpoint URL of a fresh moto server; the process is stopped on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def server_filesystem(endpoint: str):  # noqa: ANN201
    """An s3fs client of the server at ``endpoint`` that never caches listings."""
    import s3fs

    env = aws_environment(endpoint)
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=endpoint,
        use_listings_cache=False,
    )


def make_bucket(endpoint: str, bucket: str = BUCKET) -> None:
    server_filesystem(endpoint).mkdir(bucket)


def lake_objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``s3://<prefix>``, by key: what a reader of the bucket would see."""
    fs = server_filesystem(endpoint)
    return {key: fs.cat_file(key) for key in fs.find(prefix)}


def apply_environment(endpoint: str, setenv=os.environ.__setitem__) -> None:  # noqa: ANN001
    for key, value in aws_environment(endpoint).items():
        setenv(key, value)
