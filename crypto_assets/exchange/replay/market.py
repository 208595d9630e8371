"""The candles a replay serves: per symbol, sorted 1-minute rows held as numpy arrays.

Three sources, all read with the batch layer's own readers so no format is implemented twice:

* recorded files (``Market.from_sources``): any file, directory or glob that ``crypto-assets ingest``
  understands (the exchange CSV, Kaggle exports, Binance kline dumps);
* an ingested lake (``Market.from_lake``): its ``minute_raw`` dataset;
* the synthetic generator (``Market.synthetic``): the scale's history followed by a deterministic live
  continuation, generated a day at a time as the replay clock advances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from crypto_assets.batch import synthetic
from crypto_assets.batch.minute_ingest import MINUTE_DATASET, read_source
from crypto_assets.batch.sources.discovery import discover_sources
from crypto_assets.batch.sources.errors import SourceFormatError
from crypto_assets.batch.transforms.minute import clean_minutes
from crypto_assets.exchange.binance import MINUTE_MS
from crypto_assets.lake.location import scan_parquet
from crypto_assets.schema import MINUTE_SCHEMA, OHLCV
from crypto_assets.settings import SourceSpec
from crypto_assets.validation import validate_symbol


class MarketError(ValueError):
    """The replay has no usable data; the message says what was looked at."""


@dataclass
class Candles:
    """One symbol's candles, sorted by open time (epoch ms), one row per minute at most."""

    symbol: str
    open_ms: np.ndarray  # int64
    open: np.ndarray  # float64, as are the rest
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_frame(cls, symbol: str, frame: pl.DataFrame) -> Candles:
        frame = frame.sort("open_time")
        open_ms = frame["open_time"].dt.epoch("ms").to_numpy().astype(np.int64)
        columns = {name: frame[name].to_numpy().astype(np.float64) for name in OHLCV}
        return cls(symbol, open_ms, **columns)

    def extend(self, other: Candles) -> None:
        """Append later candles (rows not after the current last one are ignored)."""
        keep = other.open_ms > (self.open_ms[-1] if len(self.open_ms) else np.iinfo(np.int64).min)
        self.open_ms = np.concatenate([self.open_ms, other.open_ms[keep]])
        for name in OHLCV:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)[keep]]))

    def __len__(self) -> int:
        return len(self.open_ms)

    @property
    def first_ms(self) -> int:
        return int(self.open_ms[0])

    @property
    def last_ms(self) -> int:
        return int(self.open_ms[-1])

    def row(self, index: int) -> tuple[int, float, float, float, float, float]:
        return (
            int(self.open_ms[index]),
            float(self.open[index]),
            float(self.high[index]),
            float(self.low[index]),
            float(self.close[index]),
            float(self.volume[index]),
        )

    def index_of(self, open_ms: int) -> int | None:
        """Row of the candle opening at ``open_ms``, or None when the exchange had none then."""
        i = int(np.searchsorted(self.open_ms, open_ms))
        return i if i < len(self.open_ms) and self.open_ms[i] == open_ms else None


class Market:
    """Candles per symbol, plus an optional extender that produces later candles on demand (live sources)."""

    def __init__(
        self,
        candles: dict[str, Candles],
        extender: Callable[[str], Candles | None] | None = None,
        description: str = "",
    ):
        empty = [s for s, c in candles.items() if not len(c)]
        if empty or not candles:
            raise MarketError(f"no candles for {', '.join(empty) or 'any symbol'} in {description or 'the source'}")
        self.candles = candles
        self._extender = extender
        self.description = description

    @property
    def symbols(self) -> list[str]:
        return sorted(self.candles)

    @property
    def live(self) -> bool:
        """True when the market continues beyond its data (synthetic): the replay clock defaults to now."""
        return self._extender is not None

    @property
    def end_ms(self) -> int:
        """Just after the last candle of any symbol."""
        return max(c.last_ms for c in self.candles.values()) + MINUTE_MS

    def ensure(self, until_ms: int) -> None:
        """Make sure every symbol has its candles up to ``until_ms`` (a no-op for recorded data)."""
        if self._extender is None:
            return
        for symbol, candles in self.candles.items():
            parts: list[Candles] = []
            last_ms = candles.last_ms
            while last_ms < until_ms:
                more = self._extender(symbol)
                if more is None or not len(more):
                    break
                parts.append(more)
                last_ms = more.last_ms
            if parts:  # one concatenation for many days: copying the history once per day would be quadratic
                candles.extend(
                    Candles(symbol, *(np.concatenate([getattr(p, n) for p in parts]) for n in ("open_ms", *OHLCV)))
                )

    # -- constructors -------------------------------------------------------------------------------------

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, description: str = "a frame") -> Market:
        """From rows in ``MINUTE_SCHEMA`` (several symbols allowed; one row per symbol and minute kept)."""
        frame = frame.select(MINUTE_SCHEMA.names()).unique(["symbol", "open_time"], keep="first", maintain_order=True)
        candles = {
            str(key[0]): Candles.from_frame(str(key[0]), part)
            for key, part in frame.partition_by("symbol", as_dict=True).items()
        }
        return cls(candles, description=description)

    @classmethod
    def from_sources(cls, paths: Sequence[str | Path], symbols: Sequence[str], symbol: str | None = None) -> Market:
        """Recorded files, directories or globs; symbols are told from file names as ``ingest`` does.

        Bad rows are left out (the batch validation decides which); a file that cannot be read is an error.
        """
        specs = [SourceSpec(str(p), validate_symbol(symbol) if symbol else None) for p in paths]
        found, problems = discover_sources(specs, list(symbols))
        if problems:
            raise MarketError("; ".join(str(p) for p in problems))
        latest = datetime.now(UTC) + timedelta(days=1)
        frames = []
        for source in found:
            try:
                frame, _ = read_source(source, latest)
            except SourceFormatError as exc:
                raise MarketError(str(exc)) from exc
            frames.append(
                frame.filter(pl.col("reason").is_null())
                .select(*MINUTE_SCHEMA.names(), "source_rank", "line", "reason")
                .collect()
            )
        if not frames:
            raise MarketError(f"no source files found in {', '.join(map(str, paths))}")
        return cls.from_frame(clean_minutes(pl.concat(frames)), description=", ".join(map(str, paths)))

    @classmethod
    def from_lake(cls, lake: Path, symbols: Sequence[str] | None = None) -> Market:
        """The ``minute_raw`` dataset of an ingested lake."""
        root = Path(lake) / MINUTE_DATASET
        files = sorted(root.glob("symbol=*/year=*/month=*/*.parquet"))
        if symbols:
            wanted = {f"symbol={validate_symbol(s)}" for s in symbols}
            files = [f for f in files if f.parts[-4] in wanted]
        if not files:
            raise MarketError(f"no {MINUTE_DATASET} partitions under {root}")
        frame = scan_parquet(files, hive_partitioning=False).select(MINUTE_SCHEMA.names()).collect()
        return cls.from_frame(frame.sort("symbol", "open_time"), description=str(root))

    @classmethod
    def synthetic(cls, scale: str = "small", seed: int = 42, symbols: Sequence[str] | None = None) -> Market:
        """The synthetic market of ``scale`` (history as ``crypto-assets generate`` writes it, one row per
        minute) followed by its live continuation, a UTC day at a time, for as long as the clock runs."""
        if scale not in synthetic.SCALES:
            raise MarketError(f"unknown synthetic scale {scale!r}; expected one of {', '.join(synthetic.SCALES)}")
        series = [s for s in synthetic.SCALES[scale] if not symbols or s.symbol in symbols]
        if not series:
            raise MarketError(f"the synthetic market has no {', '.join(symbols or [])}")
        candles: dict[str, Candles] = {}
        days: dict[str, Iterator[pl.DataFrame]] = {}
        for item in series:
            history = synthetic.generate_minutes(item, seed)
            candles[item.symbol] = _kaggle_candles(
                item.symbol, history.unique("Timestamp", keep="first", maintain_order=True)
            )
            days[item.symbol] = synthetic.continuation(item, seed, last_close=float(history["Close"][-1]))

        def next_day(symbol: str) -> Candles:
            return _kaggle_candles(symbol, next(days[symbol]))

        return cls(candles, extender=next_day, description=f"synthetic market ({scale}, seed {seed})")


def _kaggle_candles(symbol: str, frame: pl.DataFrame) -> Candles:
    open_ms = frame["Timestamp"].to_numpy().astype(np.int64) * 1000
    return Candles(symbol, open_ms, *(frame[c].to_numpy().astype(np.float64) for c in synthetic.KAGGLE_COLUMNS[1:]))
