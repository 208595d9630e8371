"""Parquet codecs for the lake, side by side in one run: write time, read time and bytes of minute_raw-like
month files, on the real Binance 1-minute data in ../shared/data (or the synthetic market if it is absent).

    .venv/bin/python bench/compression_bench.py [--repeat 5]

Every codec writes the same frames in the same process, interleaved round by round, so a busy machine slows
them all alike; the table shows the fastest round of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
SHARED_1M = REPO.parent / "shared" / "data" / "binance_spot_1m"
CODECS = [("zstd", 1), ("zstd", 3), ("lz4", None), ("snappy", None), ("uncompressed", None)]


def month_frames() -> list[pl.DataFrame]:
    from crypto_assets.batch.minute_ingest import read_source
    from crypto_assets.batch.sources.discovery import discover_sources
    from crypto_assets.settings import SourceSpec

    if SHARED_1M.is_dir():
        files, _ = discover_sources([SourceSpec(str(SHARED_1M))], ["BTCUSDT", "ETHUSDT"])
    else:
        from crypto_assets.batch import synthetic

        out = Path(tempfile.mkdtemp(prefix="codec-bench-"))
        files, _ = discover_sources(
            [SourceSpec(str(p)) for p in synthetic.generate_dataset(out, scale="small")], ["BTCUSDT", "ETHUSDT"]
        )
    frames = []
    for source in files:
        frame, _ = read_source(source, datetime.now(UTC))
        rows = (
            frame.filter(pl.col("reason").is_null())
            .select("symbol", "open_time", "open", "high", "low", "close", "volume")
            .collect()
        )
        frames += [part for _, part in rows.group_by(pl.col("open_time").dt.strftime("%Y-%m"), maintain_order=True)]
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frames = month_frames()
    rows = sum(f.height for f in frames)
    out = Path(tempfile.mkdtemp(prefix="codec-bench-"))
    write: dict = {c: [] for c in CODECS}
    read: dict = {c: [] for c in CODECS}
    size: dict = {}
    for _ in range(args.repeat):
        for codec, level in CODECS:
            kwargs = {"compression": codec, **({"compression_level": level} if level else {})}
            paths = [out / f"{codec}{level}-{i}.parquet" for i in range(len(frames))]
            t0 = time.perf_counter()
            for frame, path in zip(frames, paths, strict=True):
                frame.write_parquet(path, statistics=True, **kwargs)
            write[(codec, level)].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pl.read_parquet(paths)
            read[(codec, level)].append(time.perf_counter() - t0)
            size[(codec, level)] = sum(p.stat().st_size for p in paths)
    print(f"{len(frames)} month files, {rows:,} rows; best of {args.repeat} interleaved rounds\n")
    base = min(write[("zstd", 1)])
    print("| codec | write s | write vs zstd-1 | read s | MB | bytes/row |")
    print("|---|---|---|---|---|---|")
    for codec, level in CODECS:
        name = f"{codec}-{level}" if level else codec
        w, r, b = min(write[(codec, level)]), min(read[(codec, level)]), size[(codec, level)]
        print(f"| {name} | {w:.3f} | {base / w:.2f}x | {r:.3f} | {b / 1e6:.1f} | {b / rows:.1f} |")


if __name__ == "__main__":
    main()
