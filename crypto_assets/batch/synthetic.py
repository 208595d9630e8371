"""Deterministic synthetic 1-minute OHLCV market generator.

This is the embedded default data source when no real history is configured, and the
input of the full-scale benchmarks. It writes CSV files in the layout of the Kaggle
"Bitcoin Historical Data" export (``Timestamp,Open,High,Low,Close,Volume``, Timestamp as
float Unix seconds of the candle open).

The price process is a fat-tailed (Student-t) random walk in log space whose volatility
follows two hourly log-volatility AR(1) components (fast and slow regimes), an intraday
U-shaped/bimodal profile by UTC hour and a weekend discount. Volume follows the same
regime and profile and is correlated with the size of each minute's move. Exchange-like
artefacts are injected on purpose: missing minute ranges (outages) and a few exact,
adjacent duplicate rows.

Everything is vectorized numpy; only the hourly volatility recursion is a short Python
loop. Output is byte-identical for the same (series, seed): the generator is seeded from
``(seed, crc32(symbol))``, and the transcendental function that feeds rounded values is
built from plain IEEE arithmetic (see :func:`_exp`) so results do not depend on which
SIMD code path numpy picks on a given CPU.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from crypto_assets.lake.atomic import atomic_target, write_text_atomic

__all__ = [
    "GENERATOR_VERSION",
    "KAGGLE_COLUMNS",
    "SCALES",
    "SyntheticSeries",
    "continuation",
    "generate_dataset",
    "generate_minutes",
    "market_series",
    "synthetic_symbols",
    "write_kaggle_csv",
]

# Bump whenever the generated numbers change, so cached files are regenerated.
GENERATOR_VERSION = "1"

KAGGLE_COLUMNS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")

_MINUTES_PER_DAY = 1440
_MINUTES_PER_YEAR = 365.25 * _MINUTES_PER_DAY
_PRICE_TICK = 0.01
# Smallest volume; also the smallest value polars writes without an exponent.
_MIN_VOLUME = 1e-5


@dataclass(frozen=True)
class SyntheticSeries:
    """One synthetic market: minutes in [start, end) UTC, starting at start_price."""

    symbol: str
    start: datetime
    end: datetime
    start_price: float


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


_DATA_END = _utc(2025, 12, 14)

SCALES: dict[str, tuple[SyntheticSeries, ...]] = {
    "tiny": (
        SyntheticSeries("BTCUSDT", _utc(2025, 11, 1), _DATA_END, 110_000.0),
        SyntheticSeries("ETHUSDT", _utc(2025, 11, 1), _DATA_END, 3_900.0),
    ),
    "small": (
        SyntheticSeries("BTCUSDT", _utc(2025, 9, 1), _DATA_END, 108_000.0),
        SyntheticSeries("ETHUSDT", _utc(2025, 9, 1), _DATA_END, 4_400.0),
    ),
    "full": (
        SyntheticSeries("BTCUSDT", _utc(2012, 1, 1), _DATA_END, 5.0),
        SyntheticSeries("ETHUSDT", _utc(2017, 8, 17), _DATA_END, 300.0),
    ),
}


MAX_SYMBOLS = 999


def synthetic_symbols(count: int) -> list[str]:
    """Names of a many-symbol synthetic market: SYM001USDT, SYM002USDT, ..."""
    if not 1 <= count <= MAX_SYMBOLS:
        raise ValueError(f"synthetic symbols: expected 1..{MAX_SYMBOLS}, got {count}")
    return [f"SYM{i:03d}USDT" for i in range(1, count + 1)]


def _seeded_price(symbol: str, seed: int) -> float:
    """A start price between 0.01 and 10,000, fixed by the symbol and the seed (log-uniform, as listings are)."""
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode())])
    return float(round(10 ** rng.uniform(-2.0, 4.0), 4))


def market_series(scale: str, symbols: int = 0, seed: int = 42) -> tuple[SyntheticSeries, ...]:
    """The series of a scale: its own (BTC and ETH), or ``symbols`` generated ones over the scale's span."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    if not symbols:
        return SCALES[scale]
    start = min(s.start for s in SCALES[scale])
    end = max(s.end for s in SCALES[scale])
    return tuple(SyntheticSeries(name, start, end, _seeded_price(name, seed)) for name in synthetic_symbols(symbols))


@dataclass(frozen=True)
class _Profile:
    """Per-symbol market character (not part of the public series definition)."""

    daily_vol: float  # typical daily log-return volatility
    drift_per_year: float  # long-run log drift
    base_volume: float  # typical volume per minute, in base-asset units


_PROFILES: dict[str, _Profile] = {
    # ~5 USD in 2012 to tens of thousands by 2025.
    "BTCUSDT": _Profile(daily_vol=0.030, drift_per_year=0.67, base_volume=12.0),
    # ~300 USD in 2017 to the low thousands by 2025.
    "ETHUSDT": _Profile(daily_vol=0.040, drift_per_year=0.28, base_volume=250.0),
}
_DEFAULT_PROFILE = _Profile(daily_vol=0.035, drift_per_year=0.0, base_volume=100.0)

# Hourly log-volatility regimes: (AR(1) coefficient per hour, stationary std).
_FAST_REGIME = (0.90, 0.35)  # half-life ~7 hours: intraday bursts
_SLOW_REGIME = (0.998, 0.40)  # half-life ~2 weeks: calm vs. hectic periods
_REGIME_VAR = _FAST_REGIME[1] ** 2 + _SLOW_REGIME[1] ** 2

_T_DOF = 4  # Student-t degrees of freedom for the return shocks
_MEAN_ABS_T = 1.0 / math.sqrt(2.0)  # E|T| of a unit-variance t(4) draw
# Cap on the std of the total log return, so long histories end at plausible levels.
_ENDPOINT_STD_CAP = 0.35

_WEEKEND_VOL = 0.80
_WEEKEND_VOLUME = 0.65

_GAPS_PER_30_DAYS = 4.0
_MAX_GAP_MINUTES = 300
_DUPLICATE_RATE = 1e-4


def _intraday_profiles() -> tuple[np.ndarray, np.ndarray]:
    """Volatility and volume multipliers by UTC hour: quiet Asian night, European and
    (stronger) US-open peaks. Volatility is normalised to unit mean variance, volume to
    unit mean."""
    hours = np.arange(24, dtype=np.float64) + 0.5

    def bump(centre: float, width: float) -> np.ndarray:
        d = np.abs(hours - centre)
        d = np.minimum(d, 24.0 - d)  # circular distance on the clock
        return np.exp(-((d / width) ** 2))

    raw = 0.55 + 0.45 * bump(8.5, 2.5) + 0.85 * bump(14.5, 2.5)
    vol = raw / math.sqrt(float(np.mean(raw**2)))
    volume = raw**1.5
    return vol, volume / float(np.mean(volume))


_HOURLY_VOL, _HOURLY_VOLUME = _intraday_profiles()

# Exact Cody-Waite split of ln(2) and Taylor coefficients 1/k! for _exp.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_COEFFS = tuple(1.0 / math.factorial(k) for k in range(14, -1, -1))


def _exp(x: np.ndarray) -> np.ndarray:
    """exp(x) from correctly rounded IEEE operations only (+, *, rint, ldexp).

    numpy dispatches np.exp to different SIMD kernels per CPU that can differ in the last
    bit, which would occasionally flip a rounded price or volume between machines.
    """
    k = np.rint(x * _INV_LN2)
    f = x - k * _LN2_HI
    f -= k * _LN2_LO  # |f| <= ln(2)/2, where a degree-14 Taylor series is exact enough
    p = np.full_like(f, _EXP_COEFFS[0])
    for c in _EXP_COEFFS[1:]:
        p *= f
        p += c
    return np.ldexp(p, k.astype(np.int32))


def _round(x: np.ndarray, decimals: int) -> np.ndarray:
    return np.round(x, decimals)  # scale, rint, unscale: IEEE ops, same result on any CPU


def _rng(series: SyntheticSeries, seed: int) -> np.random.Generator:
    # crc32 rather than hash(): Python's str hash is salted per process.
    symbol_key = zlib.crc32(series.symbol.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed % 2**64, symbol_key])))


def _epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # documented contract is UTC anyway
    return int(moment.timestamp())


def _hourly_log_vol(rng: np.random.Generator, hours: int) -> np.ndarray:
    """Sum of a fast and a slow stationary AR(1) log-volatility path, one value per hour."""
    (phi_f, sd_f), (phi_s, sd_s) = _FAST_REGIME, _SLOW_REGIME
    shocks = rng.standard_normal((hours, 2))
    shocks[:, 0] *= sd_f * math.sqrt(1.0 - phi_f**2)
    shocks[:, 1] *= sd_s * math.sqrt(1.0 - phi_s**2)
    fast, slow = rng.standard_normal(2) * (sd_f, sd_s)  # start in the stationary law
    out = [0.0] * hours
    for i, (e_f, e_s) in enumerate(shocks.tolist()):  # ~120k iterations at full scale
        fast = phi_f * fast + e_f
        slow = phi_s * slow + e_s
        out[i] = fast + slow
    return np.asarray(out, dtype=np.float64)


def _student_t(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance Student-t draws (fat tails) from normals, using only exact arithmetic."""
    z = rng.standard_normal(n)
    chi2 = np.zeros(n)
    for _ in range(_T_DOF):
        g = rng.standard_normal(n)
        g *= g
        chi2 += g
    chi2 *= 1.0 / (_T_DOF - 2)  # chi2/(dof-2): makes the ratio unit-variance
    np.sqrt(chi2, out=chi2)
    z /= chi2
    return z


def _gap_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    """True for minutes dropped by simulated exchange outages (log-uniform 1..300 min)."""
    if n < 3:
        return np.zeros(n, dtype=bool)
    expected = _GAPS_PER_30_DAYS * n / (30 * _MINUTES_PER_DAY)
    count = int(rng.poisson(expected))
    if n >= _MINUTES_PER_DAY:
        count = max(count, 1)  # always give downstream gap handling something to do
    lengths = np.floor(_exp(rng.random(count) * math.log(_MAX_GAP_MINUTES + 1))).astype(np.int64)
    lengths = np.clip(lengths, 1, max(1, min(_MAX_GAP_MINUTES, n // 10)))
    # Gaps never touch the first or last minute, so the file spans [start, end).
    starts = 1 + np.floor(rng.random(count) * np.maximum(n - 1 - lengths, 1)).astype(np.int64)
    edges = np.zeros(n + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, np.minimum(starts + lengths, n - 1), -1)
    return np.cumsum(edges[:n]) > 0


def _row_order(rng: np.random.Generator, dropped: np.ndarray) -> np.ndarray:
    """Indices of the rows to emit: surviving minutes, a few repeated once (adjacent)."""
    kept = np.flatnonzero(~dropped)
    count = int(rng.binomial(kept.size, _DUPLICATE_RATE))
    if kept.size >= _MINUTES_PER_DAY:
        count = max(count, 1)
    repeats = np.ones(kept.size, dtype=np.int64)
    repeats[rng.integers(0, kept.size, count)] = 2
    return np.repeat(kept, repeats)


def generate_minutes(series: SyntheticSeries, seed: int = 42, artefacts: bool = True) -> pl.DataFrame:
    """Columns Timestamp (Int64, unix seconds), Open, High, Low, Close, Volume (Float64),
    sorted by time, INCLUDING the injected gaps (rows removed) and duplicate rows (exact
    copies, adjacent) unless ``artefacts`` is False; the prices are the same either way."""
    start_s, end_s = _epoch_seconds(series.start), _epoch_seconds(series.end)
    if start_s % 60:
        raise ValueError(f"{series.symbol}: start must be on a minute boundary, got {series.start}")
    if not series.start_price > 0:
        raise ValueError(f"{series.symbol}: start_price must be positive")
    n = (end_s - start_s) // 60
    if n <= 0:
        raise ValueError(f"{series.symbol}: end must be at least one minute after start")

    profile = _PROFILES.get(series.symbol, _DEFAULT_PROFILE)
    rng = _rng(series, seed)
    ts = start_s + 60 * np.arange(n, dtype=np.int64)

    # Minute volatility: regime (hourly AR(1), linearly interpolated) x clock x weekday.
    minute_of_series = np.arange(n, dtype=np.float64)
    hourly = _hourly_log_vol(rng, n // 60 + 2)
    regime = np.interp(minute_of_series, 60.0 * np.arange(hourly.size), hourly)
    del minute_of_series
    utc_hour = (ts // 3600) % 24
    weekend = ((ts // 86400 + 3) % 7) >= 5  # 1970-01-01 was a Thursday
    sigma = _exp(regime - _REGIME_VAR)  # E[sigma^2] stays at the base level
    sigma *= _HOURLY_VOL[utc_hour]
    sigma[weekend] *= _WEEKEND_VOL
    sigma *= profile.daily_vol / math.sqrt(_MINUTES_PER_DAY)

    # Returns: fat-tailed shocks, then a constant per-minute shift (Brownian-bridge style)
    # so the total log return is drift + noise with a capped std: full-scale histories
    # end at plausible levels, while short spans behave like a free random walk.
    shocks = _student_t(rng, n)
    returns = shocks * sigma
    years = n / _MINUTES_PER_YEAR
    natural_std = math.sqrt(float(np.dot(sigma, sigma)))
    target = profile.drift_per_year * years + min(natural_std, _ENDPOINT_STD_CAP) * float(rng.standard_normal())
    returns += (target - float(returns.sum())) / n

    log_close = np.cumsum(returns)
    log_close += math.log(series.start_price)
    close = _exp(log_close)
    del log_close
    open_ = np.empty_like(close)
    open_[0] = series.start_price
    open_[1:] = close[:-1]

    # Intrabar excursions beyond the body, ~0.4 sigma on average like a Brownian minute.
    high = np.maximum(open_, close) * _exp(0.4 * sigma * rng.standard_exponential(n))
    low = np.minimum(open_, close) * _exp(-0.4 * sigma * rng.standard_exponential(n))

    # Volume: same regime and clock (stronger), larger on big moves, lognormal noise.
    volume = _exp(0.8 * (regime - _REGIME_VAR) + 0.55 * rng.standard_normal(n) - 0.55**2 / 2)
    del regime
    volume *= _HOURLY_VOLUME[utc_hour]
    volume[weekend] *= _WEEKEND_VOLUME
    volume *= 0.5 + (0.5 / _MEAN_ABS_T) * np.abs(shocks)
    volume *= profile.base_volume
    del shocks, sigma, returns, utc_hour, weekend

    # Round like the export, then re-clamp so every row is still a valid candle.
    close = np.maximum(_round(close, 2), _PRICE_TICK)
    open_[0] = max(round(series.start_price, 2), _PRICE_TICK)
    open_[1:] = close[:-1]  # open == previous close exactly, also after rounding
    high = np.maximum(np.maximum(_round(high, 2), open_), close)
    low = np.maximum(np.minimum(np.minimum(_round(low, 2), open_), close), _PRICE_TICK)
    volume = np.maximum(_round(volume, 8), _MIN_VOLUME)

    # Artefacts are drawn last, so leaving them out changes no price or volume.
    rows = _row_order(rng, _gap_mask(rng, n)) if artefacts else np.arange(n)
    return pl.DataFrame(
        {
            "Timestamp": ts[rows],
            "Open": open_[rows],
            "High": high[rows],
            "Low": low[rows],
            "Close": close[rows],
            "Volume": volume[rows],
        },
        schema={"Timestamp": pl.Int64, **{c: pl.Float64 for c in KAGGLE_COLUMNS[1:]}},
    )


def continuation(series: SyntheticSeries, seed: int = 42, last_close: float | None = None) -> Iterator[pl.DataFrame]:
    """The market after ``series.end``, one UTC day at a time without end (frames as :func:`generate_minutes`).

    Each day is its own seeded block that opens at the previous day's close, with no outages or duplicates
    (it feeds a live exchange stream). A day's minutes depend only on (series, seed) and the day, never on
    how many days are asked for, so a replay started on any date shows the same prices for the same minutes.
    ``last_close`` saves regenerating the series when the caller already has its last close.
    """
    if last_close is None:
        last_close = float(generate_minutes(series, seed)["Close"][-1])
    day = series.end
    while True:
        block = SyntheticSeries(series.symbol, day, day + timedelta(days=1), last_close)
        # One seed per day: the day's ordinal (< 2**20) in the low bits keeps days and seeds apart.
        frame = generate_minutes(block, (seed << 20) | (day.toordinal() & 0xFFFFF), artefacts=False)
        yield frame
        last_close = float(frame["Close"][-1])
        day += timedelta(days=1)


def write_kaggle_csv(frame: pl.DataFrame, path: Path) -> Path:
    """Atomic: write to a temp file in the same directory, then os.replace. Timestamp
    written as float seconds."""
    timestamp = pl.col("Timestamp")
    if isinstance(frame.schema["Timestamp"], pl.Datetime):
        timestamp = timestamp.dt.epoch("s")
    out = frame.select(timestamp.cast(pl.Float64), *[pl.col(c) for c in KAGGLE_COLUMNS[1:]])
    with atomic_target(Path(path)) as tmp:
        out.write_csv(tmp)
    return Path(path)


def _dataset_path(out_dir: Path, series: SyntheticSeries) -> Path:
    return Path(out_dir) / f"{series.symbol}_kaggle_1m.csv"


def _meta_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".meta.json")


def _meta_key(series: SyntheticSeries, scale: str, seed: int) -> dict[str, object]:
    return {
        "generator_version": GENERATOR_VERSION,
        "scale": scale,
        "seed": seed,
        "symbol": series.symbol,
        "start": series.start.isoformat(),
        "end": series.end.isoformat(),
        "start_price": series.start_price,
    }


def _is_current(csv_path: Path, key: dict[str, object]) -> bool:
    """True if csv_path was fully written by this generator with the same parameters."""
    try:
        meta = json.loads(_meta_path(csv_path).read_text())
        size = csv_path.stat().st_size
    except (OSError, ValueError):
        return False
    same_key = all(meta.get(name) == value for name, value in key.items())
    return same_key and meta.get("bytes") == size  # size guards against a replaced file


def generate_dataset(
    out_dir: Path,
    scale: str = "small",
    seed: int = 42,
    progress: Callable[[str, int], None] | None = None,
    symbols: int = 0,
) -> list[Path]:
    """Writes <out_dir>/<SYMBOL>_kaggle_1m.csv for each series of the scale; returns the
    paths. If a file already exists and a small sidecar <file>.meta.json says it was made
    with the same scale, seed and generator version, skip regenerating it (idempotent,
    cheap re-runs). progress, if given, is called as progress(symbol, rows_written) after
    each file (rows_written is 0 for a file that was skipped). With ``symbols``, the market has that many
    generated symbols instead of the scale's own (:func:`market_series`)."""
    paths: list[Path] = []
    for series in market_series(scale, symbols, seed):  # one symbol at a time keeps peak memory bounded
        csv_path = _dataset_path(out_dir, series)
        key = _meta_key(series, scale, seed)
        rows_written = 0
        if not _is_current(csv_path, key):
            _meta_path(csv_path).unlink(missing_ok=True)  # never leave a stale sidecar
            frame = generate_minutes(series, seed)
            rows_written = frame.height
            write_kaggle_csv(frame, csv_path)
            del frame
            meta = {**key, "rows": rows_written, "bytes": csv_path.stat().st_size}
            text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
            write_text_atomic(text, _meta_path(csv_path))
        paths.append(csv_path)
        if progress is not None:
            progress(series.symbol, rows_written)
    return paths
