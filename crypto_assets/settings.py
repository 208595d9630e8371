"""Project settings: where the lake lives, which symbols exist and which files feed them.

Settings come from a TOML file (``CRYPTO_ASSETS_CONFIG``, else ``./crypto_assets.toml`` when present) and
from environment variables, so a new symbol or source is configuration, never code.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path

from crypto_assets.lake.location import lake_root
from crypto_assets.validation import SettingsError, is_url, validate_symbol

DEFAULT_HISTORY_START = date(2012, 1, 1)


_UNITS_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
# Spark's interval words, singular or plural ('2 minutes'), and the short forms of retention windows ('7d').
INTERVAL_WORDS = _UNITS_MS | {f"{word}s": ms for word, ms in _UNITS_MS.items()}
SHORT_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(text: object, units: Mapping[str, int], key: str, example: str) -> int:
    """A number and one of ``units`` -> milliseconds; anything else is an error naming ``key``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", text.lower()) if isinstance(text, str) else None
    if not match or match.group(2) not in units:
        raise SettingsError(f"{key}: expected e.g. {example}, got {text!r}")
    return int(float(match.group(1)) * units[match.group(2)])


def parse_delay(text: str) -> int:
    """'2 minutes', '30 seconds', '1 hour' -> milliseconds (Spark's interval words)."""
    return _duration_ms(text, INTERVAL_WORDS, "stream.watermark", "'2 minutes'")


def parse_window(text: object, key: str) -> timedelta:
    """'30s', '10m', '6h', '7d' -> a positive timedelta."""
    window = timedelta(milliseconds=_duration_ms(text, SHORT_UNITS, key, "'7d', '6h', '10m' or '30s'"))
    if window <= timedelta(0):
        raise SettingsError(f"{key}: expected a window longer than zero, got {text!r}")
    return window


@dataclass(frozen=True)
class SymbolSpec:
    name: str
    start: date = DEFAULT_HISTORY_START


@dataclass(frozen=True)
class SourceSpec:
    """A file, directory or glob of 1-minute history; ``symbol`` overrides the name-based guess."""

    path: str
    symbol: str | None = None


@dataclass(frozen=True)
class ExchangeSettings:
    """The exchange behind backfills and the live stream; the defaults are Binance spot."""

    rest_url: str = "https://api.binance.com"
    ws_url: str = "wss://stream.binance.com:9443"
    backfill: bool = True  # fill minute gaps in minute_raw from the exchange's REST klines
    weight_limit_per_minute: int = 6000  # used until the exchange's response headers say otherwise
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "crypto"
    partitions: int = 3
    broker_port: int = 9092  # the embedded broker's port (crypto-assets broker)
    # The embedded broker keeps every message in memory: after about this many MB the producer rotates its
    # topics once the stream has committed them (streaming_sensor.trim); 0 never does. Real Kafka: unused.
    embedded_max_mb: int = 256


def validate_jvm_memory(text: object, key: str) -> None:
    """A JVM memory size as Spark takes it: '512m', '2g'."""
    if not isinstance(text, str) or not re.fullmatch(r"[1-9]\d*[kmgt]", text.lower()):
        raise SettingsError(f"{key}: expected a size like '512m' or '2g', got {text!r}")


@dataclass(frozen=True)
class SparkSettings:
    engine: str = "polars"  # batch engine: polars | spark
    master: str = "local[*]"
    kafka_jars: str = ""  # comma-separated jars of Spark's Kafka connector; empty uses the Python source
    shuffle_partitions: int = 4
    driver_memory: str = "2g"  # the batch engine's Spark driver (with local[*] it also runs the tasks)

    def __post_init__(self) -> None:
        validate_jvm_memory(self.driver_memory, "spark.driver_memory")


@dataclass(frozen=True)
class StreamSettings:
    trigger_seconds: float = 1.0
    watermark: str = "2 minutes"
    checkpoint_batches: int = 100  # Spark's checkpoint keeps the offsets and commits of this many batches
    # The stream's Spark driver (local mode runs the tasks in it too): the JVM's heap stops growing here.
    driver_memory: str = "1g"

    def __post_init__(self) -> None:
        validate_jvm_memory(self.driver_memory, "stream.driver_memory")


MIN_DAEMON_STALL_SECONDS = 60  # twice Dagster's daemon heartbeat interval


@dataclass(frozen=True)
class ServingSettings:
    sensor_min_interval_seconds: int = 30
    reports_port: int = 3001  # crypto-assets reports: the forecast reports over HTTP, linked from the UI
    stale_minutes: int = 5  # unified_view's freshness policy fails after this long without a refresh
    # `up` restarts a dagster-daemon whose newest heartbeat is older than this (it hangs); 0 never does.
    daemon_stall_seconds: int = 180
    # The speed sensor's refreshes evaluate unified_view's checks at most this often (0: on every refresh).
    # Dagster keeps each check result even after its run is deleted, about 3.5 KB, with no public API to
    # remove them: on every refresh that is ~36 MB a day, every 10 minutes ~2 MB.
    view_check_minutes: int = 10

    def __post_init__(self) -> None:
        if self.view_check_minutes < 0:
            raise SettingsError(f"serving.view_check_minutes: expected 0 or more, got {self.view_check_minutes}")
        # A window no longer than the sensor's interval would turn the view red between two healthy refreshes.
        if self.stale_minutes * 60 <= self.sensor_min_interval_seconds:
            raise SettingsError(
                f"serving.stale_minutes: {self.stale_minutes} minute(s) is not longer than "
                f"serving.sensor_min_interval_seconds ({self.sensor_min_interval_seconds}s)"
            )
        # Dagster's daemons beat every 30 s: a shorter bound would restart a healthy daemon between two beats.
        if self.daemon_stall_seconds != 0 and self.daemon_stall_seconds < MIN_DAEMON_STALL_SECONDS:
            raise SettingsError(
                f"serving.daemon_stall_seconds: expected 0 (off) or at least {MIN_DAEMON_STALL_SECONDS}, "
                f"got {self.daemon_stall_seconds}"
            )


@dataclass(frozen=True)
class LogsSettings:
    """The component logs of ``crypto-assets up`` (``<home>/logs``): each rotates at ``max_bytes`` and keeps
    ``backups`` older files, so a component never holds more than ``max_bytes × (backups + 1)``."""

    max_bytes: int = 10_000_000
    backups: int = 5


@dataclass(frozen=True)
class DagsterSettings:
    # Finished routine unified_view refreshes (and the retention job's own runs) older than this are deleted;
    # a day of them is about 0.55 GB of run history on SQLite.
    run_retention: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Settings:
    home: Path
    symbols: tuple[SymbolSpec, ...]
    sources: tuple[SourceSpec, ...] = ()
    synthetic_scale: str = "small"
    synthetic_seed: int = 42
    synthetic_symbols: int = 0  # > 0: the synthetic market has this many generated symbols (SYM001USDT, ...)
    freshness_hours: float = 48.0
    exchange: ExchangeSettings = ExchangeSettings()
    kafka: KafkaSettings = KafkaSettings()
    spark: SparkSettings = SparkSettings()
    stream: StreamSettings = StreamSettings()
    serving: ServingSettings = ServingSettings()
    dagster: DagsterSettings = DagsterSettings()
    logs: LogsSettings = LogsSettings()
    extra: Mapping[str, object] = field(default_factory=dict)
    lake: str = ""  # where the lake lives when not in <home>/lake: a local folder or s3://bucket/prefix

    @property
    def lake_dir(self) -> Path:
        """The lake: ``<home>/lake`` unless ``lake`` says otherwise (an ``s3://`` URL gives a remote path)."""
        if not self.lake:
            return self.home / "lake"
        return lake_root(self.lake)

    @property
    def remote_lake(self) -> bool:
        return is_url(self.lake)

    def require_local_lake(self, what: str) -> None:
        """The speed and serving layers append to files in place, which object storage cannot do."""
        if self.remote_lake:
            raise SettingsError(
                f"{what} needs a local (or mounted) lake; lake is {self.lake}. The object-store lake holds the "
                "batch and forecast datasets; run the speed and serving layers with a local lake"
            )

    @property
    def landing_dir(self) -> Path:
        """Files registered with ``crypto-assets ingest`` are copied here."""
        return self.home / "landing"

    @property
    def synthetic_dir(self) -> Path:
        return self.home / "synthetic"

    @property
    def speed_dir(self) -> Path:
        """Speed-layer state that is not data: streaming checkpoints, producer buffers, missed stretches."""
        return self.home / "speed"

    @property
    def symbol_names(self) -> list[str]:
        return [s.name for s in self.symbols]

    @property
    def history_start(self) -> date:
        return min(s.start for s in self.symbols)

    def symbol(self, name: str) -> SymbolSpec:
        for spec in self.symbols:
            if spec.name == name:
                return spec
        raise SettingsError(f"symbol {name!r} is not configured; configured: {', '.join(self.symbol_names)}")


DEFAULT_SYMBOLS = (
    SymbolSpec("BTCUSDT", date(2012, 1, 1)),
    SymbolSpec("ETHUSDT", date(2017, 8, 17)),
)


def _parse_date(value: object, key: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise SettingsError(f"{key}: expected a date like 2017-08-17, got {value!r}") from exc


def _config_path(env: Mapping[str, str]) -> Path | None:
    explicit = env.get("CRYPTO_ASSETS_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError(f"CRYPTO_ASSETS_CONFIG points at {path}, which is not a file")
        return path
    local = Path("crypto_assets.toml")
    return local if local.is_file() else None


SECTIONS = {
    "exchange": ExchangeSettings,
    "kafka": KafkaSettings,
    "spark": SparkSettings,
    "stream": StreamSettings,
    "serving": ServingSettings,
    "dagster": DagsterSettings,
    "logs": LogsSettings,
}
URL_SCHEMES = {"rest_url": ("http://", "https://"), "ws_url": ("ws://", "wss://")}
# Short environment names a key also answers to, besides CRYPTO_ASSETS_<SECTION>_<KEY>.
ENV_ALIASES = {"dagster.run_retention": "CRYPTO_ASSETS_RUN_RETENTION"}


def _coerce(value: object, kind: type, key: str) -> object:
    if kind is timedelta:
        return parse_window(value, key)
    if kind is bool and isinstance(value, str):
        if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
            raise SettingsError(f"{key}: expected true or false, got {value!r}")
        return value.lower() in {"true", "1", "yes"}
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{key}: expected {kind.__name__}, got {value!r}") from exc


def _section(name: str, raw: Mapping[str, object], env: Mapping[str, str]):
    """``[name]`` from the TOML file, each field overridable by ``CRYPTO_ASSETS_<NAME>_<FIELD>``."""
    cls = SECTIONS[name]
    known = {f.name: f for f in fields(cls)}
    table = raw.get(name, {})
    unknown = set(table) - set(known)
    if unknown:
        raise SettingsError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    values = {}
    for key, spec in known.items():
        env_keys = [f"CRYPTO_ASSETS_{name}_{key}".upper(), ENV_ALIASES.get(f"{name}.{key}", "")]
        env_key = next((k for k in env_keys if k and k in env), None)
        if env_key:
            values[key] = env[env_key]
        elif key in table:
            values[key] = table[key]
        else:
            continue
        kind = type(spec.default)
        values[key] = _coerce(values[key], kind, f"{name}.{key}")
        if key in URL_SCHEMES and not str(values[key]).startswith(URL_SCHEMES[key]):
            raise SettingsError(f"{name}.{key}: expected a URL starting with {' or '.join(URL_SCHEMES[key])}")
    section = cls(**values)
    for key in ("max_bytes", "backups") if name == "logs" else ():
        if getattr(section, key) < 1:
            raise SettingsError(f"logs.{key}: expected a whole number of at least 1, got {getattr(section, key)!r}")
    if name == "spark" and section.engine not in {"polars", "spark"}:
        raise SettingsError(f"spark.engine: expected polars or spark, got {section.engine!r}")
    return section


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    path = _config_path(env)
    raw: dict = tomllib.loads(path.read_text()) if path else {}
    base = path.parent if path else Path.cwd()

    home_value = env.get("CRYPTO_ASSETS_HOME") or raw.get("home") or "var"
    if is_url(str(home_value)):
        # Path() would quietly turn "s3://bucket/x" into a local folder named "s3:".
        raise SettingsError(
            f"home: {home_value!r} is a URL; home is a local folder (landing files, state, the Dagster instance). "
            'To keep the lake on object storage, set lake = "s3://bucket/prefix" (or CRYPTO_ASSETS_LAKE)'
        )
    home = Path(home_value).expanduser()
    home = (home if home.is_absolute() else base / home).resolve()
    lake = str(env.get("CRYPTO_ASSETS_LAKE") or raw.get("lake") or "")
    if lake and not is_url(lake):
        local_lake = Path(lake).expanduser()
        lake = str((local_lake if local_lake.is_absolute() else base / local_lake).resolve())
    elif lake:
        lake_root(lake)  # a malformed or unsupported URL fails here, naming the key

    symbols = (
        tuple(
            SymbolSpec(
                validate_symbol(item["name"]), _parse_date(item.get("start", DEFAULT_HISTORY_START), "symbols.start")
            )
            for item in raw.get("symbols", [])
        )
        or DEFAULT_SYMBOLS
    )
    synthetic = raw.get("synthetic", {})
    synthetic_symbols = synthetic.get("symbols", 0)
    if not isinstance(synthetic_symbols, int) or not 0 <= synthetic_symbols <= 999:
        raise SettingsError(f"synthetic.symbols: expected a number of symbols from 1 to 999, got {synthetic_symbols!r}")
    if synthetic_symbols and not raw.get("symbols"):
        # The generated market's names are the project's symbols unless [[symbols]] lists others.
        symbols = tuple(SymbolSpec(f"SYM{i:03d}USDT", DEFAULT_HISTORY_START) for i in range(1, synthetic_symbols + 1))
    if len({s.name for s in symbols}) != len(symbols):
        raise SettingsError("symbols: each symbol may be listed once")

    sources = []
    for item in raw.get("sources", []):
        if "path" not in item:
            raise SettingsError("sources: every entry needs a 'path'")
        source_path = Path(item["path"]).expanduser()
        source_path = source_path if source_path.is_absolute() else base / source_path
        symbol = item.get("symbol")
        sources.append(SourceSpec(str(source_path), validate_symbol(symbol) if symbol else None))

    scale = env.get("CRYPTO_ASSETS_SYNTHETIC_SCALE") or synthetic.get("scale", "small")
    return Settings(
        home=home,
        symbols=symbols,
        sources=tuple(sources),
        synthetic_scale=str(scale),
        synthetic_seed=int(synthetic.get("seed", 42)),
        synthetic_symbols=synthetic_symbols,
        freshness_hours=float(raw.get("checks", {}).get("freshness_hours", 48.0)),
        **{name: _section(name, raw, env) for name in SECTIONS},
        extra={
            k: v
            for k, v in raw.items()
            if k not in {"home", "lake", "symbols", "sources", "synthetic", "checks", *SECTIONS}
        },
        lake=lake,
    )
