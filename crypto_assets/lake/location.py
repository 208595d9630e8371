"""Where the lake lives: a local folder, or an object-store URL such as ``s3://bucket/prefix``.

A remote lake is a :class:`upath.UPath` over s3fs, so the lake's code walks it with the same path API as a
folder. Credentials, region and endpoint come from the standard AWS environment variables and config files
(``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible server, ``~/.aws/config``),
read by s3fs (botocore) and by Polars alike. Listings are never cached: another process's commit must be seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from crypto_assets.validation import SettingsError, is_url

REMOTE_SCHEMES = ("s3",)
# S3 takes up to 5 GiB in one PUT; below twice s3fs's chunk size it sends a single put_object.
SINGLE_PUT_LIMIT = 5 * 2**30


def lake_root(value: str | Path) -> Any:
    """The lake at ``value``: a :class:`~pathlib.Path`, or a :class:`upath.UPath` for an ``s3://`` URL."""
    text = str(value)
    if not is_url(text):
        return Path(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in REMOTE_SCHEMES:
        raise SettingsError(f"lake: {text!r} uses {scheme}://; a lake is a local folder or an s3:// URL")
    bucket = text.split("://", 1)[1].split("/", 1)[0]
    if not bucket:
        raise SettingsError(f"lake: {text!r} names no bucket; expected s3://bucket/prefix")
    from upath import UPath

    return UPath(text, use_listings_cache=False)


def is_remote(path: object) -> bool:
    """True for a location on object storage: a URL, or a path that is not a local :class:`~pathlib.Path`."""
    if isinstance(path, str):
        return is_url(path)
    return not isinstance(path, Path)


def scan_parquet(paths: Iterable[object], **kwargs: Any) -> pl.LazyFrame:
    """Lazily read lake files, local or remote: Polars takes their ``s3://…`` strings, and the AWS settings from
    the environment."""
    return pl.scan_parquet([str(p) for p in paths], **kwargs)


def read_parquet(path: object, **kwargs: Any) -> pl.DataFrame:
    return pl.read_parquet(str(path), **kwargs)


def put_object(path: Any, data: bytes) -> None:
    """Store ``data`` at ``path`` as one PUT: readers see the old object or the new one, never part of one."""
    if len(data) >= SINGLE_PUT_LIMIT:
        raise ValueError(f"{path}: {len(data)} bytes exceed the {SINGLE_PUT_LIMIT} bytes of a single PUT")
    path.fs.pipe_file(path.path, data, chunksize=SINGLE_PUT_LIMIT)
