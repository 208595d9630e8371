"""Model-based test of the ingest: random sequences of user actions against a plain dict reference.

The model is ``{(symbol, minute): row}``: an ingest of bytes not ingested before overwrites the model with
the file's rows (the first line of a minute within a file); an exchange backfill adds the replay exchange's
candles for minutes no file has; nothing else changes it. After every step ``minute_raw`` equals the model
exactly, and at the end the landing area rebuilds the same lake.

Profiles: ``HYPOTHESIS_PROFILE=ci`` (default, a few hundred sequences) or ``slow`` (many more).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_assets.batch.backfill.fill import backfill_window
from crypto_assets.batch.backfill.store import EXCHANGE_EMPTY, EXCHANGE_MINUTES
from crypto_assets.batch.minute_ingest import ingest_files, rebuild_minute_raw
from crypto_assets.batch.sources.discovery import SourceFile
from crypto_assets.exchange.client import ExchangeClient
from crypto_assets.exchange.replay.market import Market
from crypto_assets.exchange.replay.server import ReplayServer
from crypto_assets.lake.atomic import TEMP_PREFIX
from crypto_assets.schema import MINUTE_SCHEMA
from crypto_assets.settings import ExchangeSettings
from crypto_assets_tests.killing import sigkill_after_start

pytestmark = pytest.mark.integration  # a replay exchange server, and ingests killed in a child process

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SYMBOL = "BTCUSDT"
T0 = datetime(2024, 1, 31, 23, 50, tzinfo=UTC)  # the minutes cross a month boundary
MINUTES = 20
OUTAGES = {4, 5, 13}  # minutes the exchange has no candle for
HEADER = "timestamp,open,high,low,close,volume"


def minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def row(i: int, variant: int) -> tuple:
    price = 100.0 + variant
    return (SYMBOL, minute(i), price, price + 1, price - 1, price, float(variant + 1))


EXCHANGE = {i: row(i, 50 + i) for i in range(MINUTES) if i not in OUTAGES}


def csv_text(rows: list[tuple[int, int]]) -> str:
    lines = [HEADER] + [",".join([f"{minute(i):%Y-%m-%d %H:%M:%S}", *map(str, row(i, v)[2:])]) for i, v in rows]
    return "\n".join(lines) + "\n"


def file_rows(rows: list[tuple[int, int]]) -> dict[int, tuple]:
    """A file's minutes as the model sees them: the first line of a minute wins within one file."""
    out: dict[int, tuple] = {}
    for i, v in rows:
        out.setdefault(i, row(i, v))
    return out


class World:
    """The lake under test and the reference model side by side."""

    def __init__(self, root: Path, exchange_url: str):
        self.root = root
        self.home = root / "home"
        self.exchange_url = exchange_url
        self.files: list[Path] = []
        self.ingested: set[str] = set()  # file contents already ingested
        self.model_files: dict[int, tuple] = {}
        self.model_exchange: dict[int, tuple] = {}

    # -- the model --
    def model(self) -> list[tuple]:
        merged = {**self.model_exchange, **self.model_files}
        return [merged[i] for i in sorted(merged)]

    def model_ingest(self, path: Path) -> None:
        text = path.read_text()
        if text in self.ingested:
            return
        self.ingested.add(text)
        self.model_files.update(file_rows(self.contents[path]))

    # -- the system --
    def lake_rows(self, home: Path | None = None) -> list[tuple]:
        files = sorted(((home or self.home) / "lake/minute_raw").rglob("*.parquet"))
        return pl.read_parquet(files).select(MINUTE_SCHEMA.names()).rows() if files else []

    def write_file(self, rows: list[tuple[int, int]], path: Path | None = None) -> Path:
        if path is None:
            # Random names, so alphabetical order says nothing about the order of ingests.
            path = self.root / f"{SYMBOL}_{random.getrandbits(40):010x}.csv"
            self.files.append(path)
        path.write_text(csv_text(rows))
        past = time.time() - 60
        os.utime(path, (past, past))
        self.contents[path] = rows
        return path

    contents: dict[Path, list[tuple[int, int]]]

    def ingest(self, *paths: Path) -> None:
        result = ingest_files(
            [SourceFile(p, SYMBOL, 0) for p in paths], self.home / "lake", self.home / "landing", [SYMBOL]
        )
        assert not result.failed_sources, result.failed_sources
        for path in paths:
            self.model_ingest(path)

    def backfill(self) -> None:
        with ExchangeClient(ExchangeSettings(rest_url=self.exchange_url)) as client:
            result = backfill_window(
                self.home / "lake",
                {SYMBOL: T0.date()},
                client,
                T0,
                minute(MINUTES),
                now=minute(MINUTES) + timedelta(days=1),
            )
        assert result.error is None, result.error
        for i, candle in EXCHANGE.items():
            if i not in self.model_files and i not in self.model_exchange:
                self.model_exchange[i] = candle

    def check(self) -> None:
        assert self.lake_rows() == self.model()


file_contents = st.lists(st.tuples(st.integers(0, MINUTES - 1), st.integers(0, 3)), min_size=1, max_size=12)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), file_contents),
        st.tuples(st.just("reingest"), st.integers(0, 10)),
        st.tuples(st.just("overwrite"), st.integers(0, 10), file_contents),
        st.tuples(st.just("backfill")),
        st.tuples(st.just("together"), file_contents, file_contents),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def exchange_url():
    frame = pl.DataFrame([EXCHANGE[i] for i in sorted(EXCHANGE)], schema=MINUTE_SCHEMA, orient="row")
    with ReplayServer(Market.from_frame(frame)) as replay:
        yield replay.rest_url


def run_step(world: World, action: tuple) -> None:
    kind = action[0]
    if kind == "ingest":
        world.ingest(world.write_file(action[1]))
    elif kind == "reingest" and world.files:
        world.ingest(world.files[action[1] % len(world.files)])
    elif kind == "overwrite" and world.files:
        world.write_file(action[2], world.files[action[1] % len(world.files)])  # the original changes; no ingest
    elif kind == "backfill":
        world.backfill()
    elif kind == "together":
        # Two ingests at once: they serialize on the lake's lock; either order is a valid history.
        a, b = world.write_file(action[1]), world.write_file(action[2])
        done: list[Path] = []
        errors: list[BaseException] = []

        def run(path: Path) -> None:
            try:
                ingest_files([SourceFile(path, SYMBOL, 0)], world.home / "lake", world.home / "landing", [SYMBOL])
                done.append(path)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p,)) for p in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        # The manifest's order is the order they got the lock in.
        from crypto_assets.batch.landing import Manifest

        by_order = {e.original: e.order for e in Manifest.load(world.home / "landing").entries}
        for path in sorted(done, key=lambda p: by_order.get(str(p), 0)):
            world.model_ingest(path)


@given(steps=actions)
def test_minute_raw_equals_the_model_after_any_sequence(tmp_path_factory, exchange_url, steps):
    world = World(tmp_path_factory.mktemp("model"), exchange_url)
    world.contents = {}
    for action in steps:
        run_step(world, action)
        world.check()
    # The landing area and the fetched candles rebuild exactly the same lake.
    rebuilt = world.root / "rebuilt"
    if (world.home / "landing").exists():
        shutil.copytree(world.home / "landing", rebuilt / "landing")
    for dataset in (EXCHANGE_MINUTES, EXCHANGE_EMPTY):
        if (world.home / "lake" / dataset).exists():
            shutil.copytree(world.home / "lake" / dataset, rebuilt / "lake" / dataset)
    rebuild_minute_raw(rebuilt / "lake", rebuilt / "landing", [SYMBOL])
    assert world.lake_rows(rebuilt) == world.lake_rows()
    shutil.rmtree(world.root)


KILLED_INGEST = (
    "import sys; from pathlib import Path; from crypto_assets.batch.minute_ingest import ingest_files\n"
    "from crypto_assets.batch.sources.discovery import SourceFile\n"
    "home = Path(sys.argv[1]); print('started', flush=True)\n"
    "ingest_files([SourceFile(Path(p), 'BTCUSDT', 0) for p in sys.argv[2:]], home / 'lake', home / 'landing', ['BTCUSDT'])\n"
)


@settings(max_examples=int(os.environ.get("KILL_EXAMPLES", "8")))
@given(before=st.lists(file_contents, max_size=2), killed=file_contents, delay=st.floats(0.0, 0.6))
def test_an_ingest_killed_at_any_point_then_rerun_loses_and_duplicates_nothing(
    tmp_path_factory, exchange_url, before, killed, delay
):
    """A real process is SIGKILLed at a random point of its ingest; the rerun gives the model's lake and
    leaves no temporary file behind."""
    world = World(tmp_path_factory.mktemp("kill"), exchange_url)
    world.contents = {}
    for rows in before:
        world.ingest(world.write_file(rows))
    path = world.write_file(killed)
    sigkill_after_start(KILLED_INGEST, [str(world.home), str(path)], delay)  # the kill lands inside the ingest
    world.ingest(path)  # the user runs the same ingest again
    world.check()
    assert not [p for p in world.home.rglob(f"{TEMP_PREFIX}*")], "the rerun removes what the killed one left"
    shutil.rmtree(world.root)
